package identity_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/sandbox/supabaseauth"
)

const keysUser = "5f1a0009-7c2b-4d3e-8f40-000000000009"

// jwksAuth is a Supabase Auth stand-in on asymmetric keys, and a
// verifier that knows only its JWKS.
func jwksAuth(t *testing.T) (*supabaseauth.Server, *identity.Verifier) {
	t.Helper()
	auth := supabaseauth.New(supabaseauth.Config{})
	srv := httptest.NewServer(auth)
	t.Cleanup(srv.Close)
	v, err := identity.NewVerifier(nil, identity.NewKeySet(srv.URL+supabaseauth.JWKSPath, nil),
		identity.Policy{Issuer: supabaseauth.DefaultIssuer, Audience: "authenticated", Role: "authenticated"})
	if err != nil {
		t.Fatal(err)
	}
	return auth, v
}

func signed(t *testing.T, auth *supabaseauth.Server, opts ...supabaseauth.TokenOption) string {
	t.Helper()
	tok, err := auth.Token(supabaseauth.User{ID: keysUser}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// eventually polls verify until it gives want, for at most limit.
func eventually(t *testing.T, v *identity.Verifier, token string, want identity.Result, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, got := v.Verify(t.Context(), token)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("still %s after %s, want %s", got, limit, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A JWKS that failed at the first sign-in is used within seconds of
// its recovery (it was 5 minutes), and never before.
func TestJWKSThatRecovers(t *testing.T) {
	t.Parallel()
	auth, v := jwksAuth(t)
	token := signed(t, auth)
	if err := auth.SetJWKSFault(503); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, got := v.Verify(t.Context(), token); got != identity.KeysUnavailable {
			t.Fatalf("with the JWKS down: %s, want keys_unavailable", got)
		}
	}
	if err := auth.SetJWKSFault(0); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, v, token, identity.OK, 30*time.Second)
	t.Logf("recovered %s after the JWKS did", took)
}

// A key published after the set was fetched is used at its first
// token: the refetch on an unknown kid waits for its slot rather than
// refuse.
func TestNewlyPublishedKeyIsUsedAtOnce(t *testing.T) {
	t.Parallel()
	auth, v := jwksAuth(t)
	if _, got := v.Verify(t.Context(), signed(t, auth)); got != identity.OK {
		t.Fatalf("first key: %s", got)
	}
	if _, err := auth.RotateKey(); err != nil {
		t.Fatal(err)
	}
	if _, got := v.Verify(t.Context(), signed(t, auth)); got != identity.OK {
		t.Errorf("a token under the newly published key: %s, want ok", got)
	}
}

// Tokens with made-up kids (anyone can send them) cost the JWKS at
// most one fetch per slot and do not keep a real new key out.
func TestMadeUpKIDsDoNotStarveTheRefetch(t *testing.T) {
	t.Parallel()
	auth, v := jwksAuth(t)
	if _, got := v.Verify(t.Context(), signed(t, auth)); got != identity.OK {
		t.Fatalf("first key: %s", got)
	}
	start := time.Now()
	before := auth.Counts().JWKSFetches
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && i < 200; i++ {
				method, key, _ := mustSigner(t)
				tok := signed(t, auth, supabaseauth.WithSigner(method, key, fmt.Sprintf("made-up-%d-%d", w, i)))
				if _, got := v.Verify(ctx, tok); got == identity.OK {
					t.Errorf("a made-up kid verified")
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // let the flood start first
	if _, err := auth.RotateKey(); err != nil {
		t.Fatal(err)
	}
	eventually(t, v, signed(t, auth), identity.OK, 10*time.Second)
	cancel()
	wg.Wait()
	fetches := auth.Counts().JWKSFetches - before
	// One per 2 s slot, plus one in flight at each end.
	if limit := int(time.Since(start)/(2*time.Second)) + 2; fetches > limit {
		t.Errorf("%d JWKS fetches in %s of made-up kids, want at most %d", fetches, time.Since(start).Round(time.Millisecond), limit)
	}
}

// HS256 (the legacy secret) and ES256 (a JWKS key) verify side by side,
// chosen by each token's alg, as while a project moves to asymmetric
// keys.
func TestSecretAndJWKSTogether(t *testing.T) {
	t.Parallel()
	secret := []byte("a-project-legacy-jwt-secret-of-32-bytes-or-more")
	auth := supabaseauth.New(supabaseauth.Config{JWTSecret: secret})
	if _, err := auth.RotateKey(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(auth)
	t.Cleanup(srv.Close)
	policy := identity.Policy{Issuer: supabaseauth.DefaultIssuer, Audience: "authenticated", Role: "authenticated"}
	both, err := identity.NewVerifier(secret, identity.NewKeySet(srv.URL+supabaseauth.JWKSPath, nil), policy)
	if err != nil {
		t.Fatal(err)
	}
	onlySecret, _ := identity.NewVerifier(secret, nil, policy)
	hs := signed(t, auth, supabaseauth.WithSecret())
	es := signed(t, auth)
	for name, c := range map[string]struct {
		v     *identity.Verifier
		token string
		want  identity.Result
	}{
		"hs256 with both":        {both, hs, identity.OK},
		"es256 with both":        {both, es, identity.OK},
		"es256 with only secret": {onlySecret, es, identity.BadSignature},
	} {
		if user, got := c.v.Verify(t.Context(), c.token); got != c.want || (got == identity.OK && user != keysUser) {
			t.Errorf("%s: %s user %q, want %s", name, got, user, c.want)
		}
	}
	// A JWKS key's public half is never an HMAC secret.
	if _, err := identity.NewVerifier(nil, nil, policy); err == nil {
		t.Error("a verifier with no key was built")
	}
}
