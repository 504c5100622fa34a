package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/internal/caddylog"
	"github.com/credgate/credgate/internal/pgtest"
)

func provisionIdentity(t *testing.T, id *Identity) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	if err := id.provision(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestIdentityFromJWKS(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwks)
	}))
	defer srv.Close()
	id := &Identity{JWKSURL: srv.URL, Issuer: "https://auth.example"}
	provisionIdentity(t, id)

	sign := func(kid, iss string, signer *rsa.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": alice, "iss": iss, "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		s, _ := tok.SignedString(signer)
		return s
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, c := range map[string]struct {
		token string
		want  string
	}{
		"valid":         {sign("k1", "https://auth.example", key), alice},
		"wrong issuer":  {sign("k1", "https://evil.example", key), ""},
		"unknown kid":   {sign("k2", "https://auth.example", key), ""},
		"forged":        {sign("k1", "https://auth.example", other), ""},
		"hs256 instead": {mustHS(t), ""},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+c.token)
		if got := id.userID(r); got != c.want {
			t.Errorf("%s: user %q, want %q", name, got, c.want)
		}
	}
}

func mustHS(t *testing.T) string {
	tok, err := SignDevToken(alice, devSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestIdentityFromPlaceholderAndCookie(t *testing.T) {
	t.Parallel()
	id := &Identity{Placeholder: "{http.request.header.X-Auth-User}"}
	provisionIdentity(t, id)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Auth-User", alice)
	repl := caddy.NewReplacer()
	repl.Map(func(key string) (any, bool) {
		if key == "http.request.header.X-Auth-User" {
			return r.Header.Get("X-Auth-User"), true
		}
		return nil, false
	})
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	if got := id.userID(r); got != alice {
		t.Errorf("placeholder identity: %q", got)
	}
	r.Header.Set("X-Auth-User", "not-a-uuid")
	if got := id.userID(r); got != "" {
		t.Errorf("a non-UUID user id was accepted: %q", got)
	}

	both := &Identity{JWTSecret: devSecret}
	provisionIdentity(t, both)
	r = httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sb-access-token", Value: "stale.garbage.token"})
	r.Header.Set("Authorization", "Bearer "+mustHS(t))
	if got := both.userID(r); got != alice {
		t.Errorf("a stale cookie hid a valid bearer token: %q", got)
	}

	cookieID := &Identity{JWTSecret: devSecret, NoHeader: true}
	provisionIdentity(t, cookieID)
	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+mustHS(t))
	if got := cookieID.userID(r); got != "" {
		t.Errorf("no_header still read the header: %q", got)
	}
	r.AddCookie(&http.Cookie{Name: "sb-access-token", Value: mustHS(t)})
	if got := cookieID.userID(r); got != alice {
		t.Errorf("cookie identity: %q", got)
	}
	expired, _ := SignDevToken(alice, devSecret, -time.Hour)
	r = httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sb-access-token", Value: expired})
	if got := cookieID.userID(r); got != "" {
		t.Errorf("expired token accepted")
	}
	if err := (&Identity{JWTSecret: "short"}).provision(caddy.Context{Context: t.Context()}); err == nil {
		t.Error("a short jwt_secret was accepted")
	}
}

// A key whose fingerprint does not match the database stops Caddy.
func TestStartFailsClosedOnAnotherKey(t *testing.T) {
	db := pgtest.Database(t)
	t.Cleanup(func() { caddy.Stop() })
	load := func(key string) error {
		cfg, _ := json.Marshal(map[string]any{"admin": map[string]any{"disabled": true},
			"apps": map[string]any{"credgate": map[string]any{"database_url": db, "master_key": key}}})
		return caddylog.Load(t, cfg)
	}
	if err := load(testKey(1)); err != nil {
		t.Fatal(err)
	}
	err := load(testKey(2))
	if err == nil {
		t.Fatal("Caddy accepted a different master key under the same id")
	}
	if want := "key id 1 in ENCRYPTION_MASTER_KEY is not the key first used under that id"; !contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// userID is the identity's user for r, for tests that need only that.
func (id *Identity) userID(r *http.Request) string {
	return id.read(httptest.NewRecorder(), r, identity.MayRefresh).UserID
}

func TestDevtoken(t *testing.T) {
	t.Parallel()
	const secretValue = "dev-secret-dev-secret-dev-secret-0123"
	out, err := runCLI(t, "devtoken", "--user", "11111111-1111-4111-8111-111111111111", "--secret", secretValue)
	if err != nil {
		t.Fatal(err)
	}
	id := &Identity{JWTSecret: secretValue}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	if err := id.provision(ctx); err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+strings.TrimSpace(out))
	if got := id.userID(r); got != "11111111-1111-4111-8111-111111111111" {
		t.Errorf("the handler reads user %q from the dev token", got)
	}
	for _, args := range [][]string{
		{"devtoken", "--user", "11111111-1111-4111-8111-111111111111"},
		{"devtoken", "--user", "not-a-uuid", "--secret", secretValue},
		{"devtoken", "--user", "11111111-1111-4111-8111-111111111111", "--secret", "short"},
	} {
		if _, err := runCLI(t, args...); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
}
