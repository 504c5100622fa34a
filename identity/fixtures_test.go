package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/internal/supabasetest"
	"github.com/credgate/credgate/sandbox/supabaseauth"
)

func supabaseReader(t *testing.T, fx supabasetest.Fixture, keys supabasetest.Keys, authURL string, refresh bool, policy func(*identity.Policy)) *identity.Reader {
	t.Helper()
	p := identity.Policy{Issuer: fx.ProjectURL + "/auth/v1", Audience: "authenticated", Role: "authenticated"}
	if policy != nil {
		policy(&p)
	}
	v, err := identity.NewVerifier([]byte(keys.HS256Secret), identity.NewKeySet(authURL+"/.well-known/jwks.json", nil), p)
	if err != nil {
		t.Fatal(err)
	}
	rd := &identity.Reader{Cookies: []string{fx.StorageKey}, Header: true, Verifier: v}
	if refresh {
		rd.Refresher = identity.NewRefresher(authURL, supabasetest.PublishableKey, nil)
	}
	return rd
}

func requestWithCookies(header string) *http.Request {
	r := httptest.NewRequest("GET", "/api/twitter/connect", nil)
	r.Header.Set("Cookie", header)
	return r
}

// Every format the real libraries write is read, and names its user.
func TestFixturesFromTheRealLibraries(t *testing.T) {
	t.Parallel()
	fixtures, keys := supabasetest.Load(t)
	_, auth := supabasetest.Auth(t, fixtures, keys)
	for name, fx := range fixtures {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := identity.ReadSession(requestWithCookies(fx.CookieHeader), fx.StorageKey)
			if err != nil {
				t.Fatalf("reading the cookie: %v", err)
			}
			if s.AccessToken != fx.AccessToken {
				t.Errorf("access token %.20q…, want %.20q…", s.AccessToken, fx.AccessToken)
			}
			if name == "ssr-chunked" && len(s.Chunks) < 2 {
				t.Errorf("the chunked fixture came from %d cookie(s)", len(s.Chunks))
			}
			got := supabaseReader(t, fx, keys, auth.URL+"/auth/v1", false, nil).Read(t.Context(), requestWithCookies(fx.CookieHeader), identity.MayRefresh)
			want := identity.OK
			if fx.Expired {
				want = identity.Expired
			}
			if got.Result != want || (want == identity.OK && got.UserID != fx.UserID) {
				t.Errorf("read %s user %q, want %s user %q", got.Result, got.UserID, want, fx.UserID)
			}
		})
	}
}

// The refusals a real app's cookies can meet, each named.
func TestRefusalsAreNamed(t *testing.T) {
	t.Parallel()
	fixtures, keys := supabasetest.Load(t)
	authSrv, auth := supabasetest.Auth(t, fixtures, keys)
	single := fixtures["ssr-single"]
	key := single.StorageKey
	anonKey, err := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSecret(),
		supabaseauth.WithClaim("role", "anon"), supabaseauth.WithoutClaim("sub"), supabaseauth.WithClaim("aud", nil))
	if err != nil {
		t.Fatal(err)
	}
	serviceKey, _ := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSecret(), supabaseauth.WithClaim("role", "service_role"))
	wrongAud, _ := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSecret(), supabaseauth.WithClaim("aud", "someone-else"))
	wrongIss, _ := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSecret(), supabaseauth.WithClaim("iss", "https://other.supabase.co/auth/v1"))
	madeUpKID, _ := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSigner(mustSigner(t)))
	forged := single.AccessToken[:len(single.AccessToken)-4] + "AAAA"
	for name, c := range map[string]struct {
		cookie  string
		policy  func(*identity.Policy)
		fixture string
		want    identity.Result
	}{
		"no cookie":                 {cookie: "other=1", want: identity.Missing},
		"not base64":                {cookie: key + "=base64-%%%", want: identity.Malformed},
		"json without a token":      {cookie: key + "=%7B%22user%22%3A1%7D", want: identity.Malformed},
		"garbage":                   {cookie: key + "=hello", want: identity.Malformed},
		"chunks past the cap":       {cookie: chunks(key, 17, "base64-", "QUFB"), want: identity.Malformed},
		"chunks past the size":      {cookie: chunks(key, 3, "base64-", strings.Repeat("Q", 30000)), want: identity.Malformed},
		"a gap after chunk 0":       {cookie: key + ".0=base64-e30; " + key + ".2=x", want: identity.Malformed},
		"the anon key":              {cookie: key + "=" + anonKey, want: identity.NotUser},
		"the service_role key":      {cookie: key + "=" + serviceKey, want: identity.NotUser},
		"another audience":          {cookie: key + "=" + wrongAud, want: identity.WrongAudience},
		"another project":           {cookie: key + "=" + wrongIss, want: identity.WrongIssuer},
		"a made-up kid":             {cookie: key + "=" + madeUpKID, want: identity.UnknownKID},
		"a forged signature":        {cookie: key + "=" + forged, want: identity.BadSignature},
		"anonymous, refused":        {fixture: "ssr-anonymous", policy: func(p *identity.Policy) { p.RefuseAnonymous = true }, want: identity.Anonymous},
		"anonymous, allowed":        {fixture: "ssr-anonymous", want: identity.OK},
		"expired, no refresh":       {fixture: "ssr-expired", want: identity.Expired},
		"auth-helpers array, fresh": {fixture: "auth-helpers-0.10", want: identity.OK},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cookie := c.cookie
			if c.fixture != "" {
				cookie = fixtures[c.fixture].CookieHeader
			}
			got := supabaseReader(t, single, keys, auth.URL+"/auth/v1", false, c.policy).Read(t.Context(), requestWithCookies(cookie), identity.MayRefresh)
			if got.Result != c.want {
				t.Errorf("result %s, want %s", got.Result, c.want)
			}
			if !got.Result.Usable() && got.UserID != "" {
				t.Errorf("refused, yet names user %q", got.UserID)
			}
		})
	}
}

func chunks(key string, n int, prefix, each string) string {
	var parts []string
	for i := range n {
		v := each
		if i == 0 {
			v = prefix + each
		}
		parts = append(parts, key+"."+strconv.Itoa(i)+"="+v)
	}
	return strings.Join(parts, "; ")
}

// mustSigner is a P-256 key under a kid no JWKS has.
func mustSigner(t *testing.T) (jwt.SigningMethod, any, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return jwt.SigningMethodES256, key, "made-up-kid"
}
