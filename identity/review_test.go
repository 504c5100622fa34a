package identity_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/internal/supabasetest"
	"github.com/credgate/credgate/sandbox/supabaseauth"
)

// One validly signed expired token with made-up refresh tokens, sent
// again and again, cannot make credgate call Supabase Auth more than a
// few times: its per-IP refresh limit is everyone's.
func TestRefreshesPerUserAreLimited(t *testing.T) {
	t.Parallel()
	fixtures, keys := supabasetest.Load(t)
	authSrv, auth := supabasetest.Auth(t, fixtures, keys)
	fx := fixtures["ssr-expired"]
	rd := supabaseReader(t, fx, keys, auth.URL+"/auth/v1", true, nil)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			session, _ := json.Marshal(map[string]any{"access_token": fx.AccessToken, "refresh_token": "made-up-" + strings.Repeat("x", i)})
			r := requestWithCookies(fx.StorageKey + "=base64-" + b64(session))
			if got := rd.Read(t.Context(), r, identity.MayRefresh); got.Result != identity.RefreshFailed {
				t.Errorf("a made-up refresh token: %s", got.Result)
			}
		})
	}
	wg.Wait()
	if n := authSrv.Counts().RefreshRequests; n > 3 {
		t.Errorf("%d refresh calls for one user's 50 made-up refresh tokens, want at most 3", n)
	}
}

// A raw-JSON session with non-ASCII metadata is chunked where
// @supabase/ssr chunks it (never inside a UTF-8 character), so the
// library reads credgate's cookies back.
func TestRawSessionChunksKeepCharactersWhole(t *testing.T) {
	t.Parallel()
	fixtures, _ := supabasetest.Load(t)
	fx := fixtures["ssr-raw"]
	session, _ := json.Marshal(map[string]any{"access_token": fx.AccessToken, "refresh_token": "r1", "token_type": "bearer",
		"expires_in": 3600, "expires_at": 4102444800, "user": map[string]any{"id": fx.UserID, "user_metadata": map[string]any{"full_name": strings.Repeat("é", 1200) + "Zoë 🎉"}}})
	cookies, err := identity.SessionCookies(fx.StorageKey, session, identity.FormatJSON, nil, identity.CookieOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cookies) < 2 {
		t.Fatalf("%d cookies: the test needs chunks", len(cookies))
	}
	access, _ := supabasetest.ReadBack(t, fx.ProjectURL, supabasetest.Browser("", cookies))
	if access != fx.AccessToken {
		t.Errorf("@supabase/ssr read %.16q…, want the session's token", access)
	}
}

// The app's cookie options are written back, and stale chunks are
// expired both where the app writes them and host-only.
func TestWriteBackKeepsTheAppsCookieOptions(t *testing.T) {
	t.Parallel()
	cookies, err := identity.SessionCookies("sb-x-auth-token", []byte(`{"access_token":"a"}`), identity.FormatBase64,
		[]string{"sb-x-auth-token.0", "sb-x-auth-token.1"}, identity.CookieOptions{Domain: "example.com", Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	var set, hostOnlyExpired, domainExpired int
	for _, c := range cookies {
		switch {
		case c.MaxAge > 0 && c.Domain == "example.com" && c.Secure:
			set++
		case c.MaxAge < 0 && c.Domain == "":
			hostOnlyExpired++
		case c.MaxAge < 0 && c.Domain == "example.com":
			domainExpired++
		}
	}
	if set != 1 || hostOnlyExpired != 2 || domainExpired != 2 {
		t.Errorf("set %d, expired host-only %d and on the domain %d; want 1, 2, 2: %v", set, hostOnlyExpired, domainExpired, cookies)
	}
	if _, err := identity.SessionCookies("n", []byte(strings.Repeat("x", 64<<10)), identity.FormatBase64, nil, identity.CookieOptions{}); err == nil {
		t.Error("a session too large to read back was written")
	}
}

// A browser holding two copies of the session (another Domain or Path)
// is not refreshed: which copy the app reads is its framework's choice.
func TestDuplicatedSessionIsNotRewritten(t *testing.T) {
	t.Parallel()
	fixtures, keys := supabasetest.Load(t)
	authSrv, auth := supabasetest.Auth(t, fixtures, keys)
	fx := fixtures["ssr-expired"]
	rd := supabaseReader(t, fx, keys, auth.URL+"/auth/v1", true, nil)
	got := rd.Read(t.Context(), requestWithCookies(fx.CookieHeader+"; "+fx.CookieHeader), identity.MayRefresh)
	if got.Result != identity.Expired || len(got.SetCookies) != 0 || authSrv.Counts().RefreshRequests != 0 {
		t.Errorf("two copies: %s, %d cookies, %d refreshes", got.Result, len(got.SetCookies), authSrv.Counts().RefreshRequests)
	}
}

// A JWKS that answers 200 with no usable key keeps the keys that work.
func TestEmptyJWKSKeepsTheKeys(t *testing.T) {
	t.Parallel()
	auth := supabaseauth.New(supabaseauth.Config{})
	var empty atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if empty.Load() {
			w.Write([]byte(`{"keys":[]}`))
			return
		}
		auth.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	v, err := identity.NewVerifier(nil, identity.NewKeySet(srv.URL+supabaseauth.JWKSPath, nil),
		identity.Policy{Issuer: supabaseauth.DefaultIssuer, Audience: "authenticated", Role: "authenticated"})
	if err != nil {
		t.Fatal(err)
	}
	token := signed(t, auth)
	if _, got := v.Verify(t.Context(), token); got != identity.OK {
		t.Fatalf("first: %s", got)
	}
	empty.Store(true)
	method, key, _ := mustSigner(t)
	// A made-up kid makes it refetch, and the answer is empty.
	v.Verify(t.Context(), signed(t, auth, supabaseauth.WithSigner(method, key, "made-up")))
	if _, got := v.Verify(t.Context(), token); got != identity.OK {
		t.Errorf("after an empty JWKS: %s, want the known key still ok", got)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
