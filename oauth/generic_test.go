package oauth_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
)

// mockoidc keeps its sessions in an unlocked map; the tests here that use
// it take turns.
var mockoidcMu sync.Mutex

// authorizeAtMockOIDC begins a flow with p as subject, whom mockoidc m
// approves, and returns the flow and the code it redirected with.
func authorizeAtMockOIDC(t *testing.T, m *mockoidc.MockOIDC, p *oauth.Provider, subject string) (oauth.Start, string) {
	t.Helper()
	m.QueueUser(&mockoidc.MockUser{Subject: subject, Email: subject + "@example.test", PreferredUsername: subject})
	start, err := p.Begin()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noRedirects.Get(start.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Query().Get("state") != start.State.Reveal() {
		t.Fatalf("authorize: %d %s", resp.StatusCode, loc)
	}
	return start, loc.Query().Get("code")
}

// The generic profile against a server no one here wrote: mockoidc
// verifies PKCE S256 itself.
func TestGenericProfileAgainstMockOIDC(t *testing.T) {
	t.Parallel()
	mockoidcMu.Lock()
	defer mockoidcMu.Unlock()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()

	p, err := oauth.New("generic", oauth.Config{
		ClientID: m.ClientID, ClientSecret: secret.New(m.ClientSecret), RedirectURL: "http://127.0.0.1:1/callback",
		AuthURL: m.AuthorizationEndpoint(), TokenURL: m.TokenEndpoint(),
		Scopes:  []string{"openid", "email", "profile"},
		Generic: oauth.GenericSettings{UserinfoURL: m.UserinfoEndpoint()},
	})
	if err != nil {
		t.Fatal(err)
	}
	authorize := func(subject string) (oauth.Start, string) { return authorizeAtMockOIDC(t, m, p, subject) }

	start, code := authorize("u-42")
	tok, err := p.Complete(context.Background(), secret.New(code), start.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	if tok.PlatformUserID != "u-42" || tok.Username != "u-42" || tok.RefreshToken.IsZero() {
		t.Errorf("token set: %+v", tok)
	}
	// mockoidc's expires_in is in nanoseconds: the client must not store a
	// token that looks valid for decades.
	if !tok.Expiry.IsZero() {
		t.Errorf("implausible expires_in was believed: expiry %v", tok.Expiry)
	}
	if _, err := p.Refresh(context.Background(), tok); err != nil {
		t.Errorf("refresh: %v", err)
	}

	// mockoidc checks the verifier against the S256 challenge.
	start, code = authorize("u-43")
	_, err = p.Complete(context.Background(), secret.New(code), secret.New(start.Verifier.Reveal()+"x"))
	wantCode(t, err, oauth.CodeInvalidGrant)
}

// An OIDC provider's ID token names the user: the exchange's token is
// read and userinfo is not called, unless the token lacks the name
// userinfo would give.
func TestGenericIdentityFromTheIDToken(t *testing.T) {
	t.Parallel()
	mockoidcMu.Lock()
	defer mockoidcMu.Unlock()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	var userinfoCalls atomic.Int64
	m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == mockoidc.UserinfoEndpoint {
				userinfoCalls.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	for _, tc := range []struct {
		scopes       []string
		wantUsername string
		wantUserinfo int64
	}{
		{[]string{"openid", "profile"}, "u-44", 0},
		// No profile scope: no preferred_username in the ID token, so
		// userinfo is asked (and does not have it either).
		{[]string{"openid"}, "", 1},
	} {
		p, err := oauth.New("generic", oauth.Config{
			ClientID: m.ClientID, ClientSecret: secret.New(m.ClientSecret), RedirectURL: "http://127.0.0.1:1/callback",
			AuthURL: m.AuthorizationEndpoint(), TokenURL: m.TokenEndpoint(), Scopes: tc.scopes,
			Generic: oauth.GenericSettings{UserinfoURL: m.UserinfoEndpoint()},
		})
		if err != nil {
			t.Fatal(err)
		}
		start, code := authorizeAtMockOIDC(t, m, p, "u-44")
		before := userinfoCalls.Load()
		tok, err := p.Complete(context.Background(), secret.New(code), start.Verifier)
		if err != nil {
			t.Fatalf("%v: %v", tc.scopes, err)
		}
		if tok.PlatformUserID != "u-44" || tok.Username != tc.wantUsername {
			t.Errorf("%v: identity %q %q, want u-44 %q", tc.scopes, tok.PlatformUserID, tok.Username, tc.wantUsername)
		}
		if got := userinfoCalls.Load() - before; got != tc.wantUserinfo {
			t.Errorf("%v: %d userinfo calls, want %d", tc.scopes, got, tc.wantUserinfo)
		}
	}
}

// An ID token that is not for this client, has expired, or is not a JWT
// is not believed: the identity comes from userinfo, and the connect
// goes on. Numeric ids keep every digit.
func TestGenericIDTokenNotForThisClientFallsBackToUserinfo(t *testing.T) {
	t.Parallel()
	const client = "client-a"
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
	sign := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("whatever-the-provider-uses"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name, idToken, wantID string
		wantUserinfo          int64
		tokenURL              string // default: the test server's (loopback)
	}{
		{"good", sign(jwt.MapClaims{"sub": "tok-1", "aud": client, "exp": future, "preferred_username": "ann"}), "tok-1", 0, ""},
		{"over TLS", sign(jwt.MapClaims{"sub": "tok-1", "aud": client, "exp": future, "preferred_username": "ann"}), "tok-1", 0, "https://sso.example/token"},
		// Over plain HTTP to another host, the answer may have been
		// changed on the way: only a signature would vouch for the token.
		{"plain HTTP to another host", sign(jwt.MapClaims{"sub": "tok-1", "aud": client, "exp": future, "preferred_username": "ann"}), "from-userinfo", 1, "http://sso.example/token"},
		{"numeric id", sign(jwt.MapClaims{"sub": 12345678901234, "aud": []string{client}, "exp": future, "preferred_username": "ann"}), "12345678901234", 0, ""},
		{"numeric id past 2^53", sign(jwt.MapClaims{"sub": json.Number("12345678901234567890"), "aud": client, "exp": future, "preferred_username": "ann"}), "12345678901234567890", 0, ""},
		{"id neither string nor number", sign(jwt.MapClaims{"sub": true, "aud": client, "exp": future, "preferred_username": "ann"}), "from-userinfo", 1, ""},
		{"azp another client", sign(jwt.MapClaims{"sub": "tok-1", "aud": client, "azp": "client-b", "exp": future, "preferred_username": "ann"}), "from-userinfo", 1, ""},
		{"another client", sign(jwt.MapClaims{"sub": "tok-1", "aud": "client-b", "exp": future, "preferred_username": "ann"}), "from-userinfo", 1, ""},
		{"two audiences without azp", sign(jwt.MapClaims{"sub": "tok-1", "aud": []string{client, "client-b"}, "exp": future, "preferred_username": "ann"}), "from-userinfo", 1, ""},
		{"two audiences, azp this client", sign(jwt.MapClaims{"sub": "tok-1", "aud": []string{client, "client-b"}, "azp": client, "exp": future, "preferred_username": "ann"}), "tok-1", 0, ""},
		{"expired", sign(jwt.MapClaims{"sub": "tok-1", "aud": client, "exp": past, "preferred_username": "ann"}), "from-userinfo", 1, ""},
		{"no expiry", sign(jwt.MapClaims{"sub": "tok-1", "aud": client, "preferred_username": "ann"}), "from-userinfo", 1, ""},
		{"no sub", sign(jwt.MapClaims{"aud": client, "exp": future, "preferred_username": "ann"}), "from-userinfo", 1, ""},
		{"not a JWT", "not-a-jwt", "from-userinfo", 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var userinfoCalls atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				switch r.URL.Path {
				case "/token":
					json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": tc.idToken})
				case "/userinfo":
					userinfoCalls.Add(1)
					io.WriteString(w, `{"sub": "from-userinfo", "preferred_username": "ann"}`)
				}
			}))
			defer srv.Close()
			tokenURL := srv.URL + "/token"
			if tc.tokenURL != "" {
				tokenURL = tc.tokenURL
			}
			// Every request reaches the test server, whatever host and
			// scheme its URL names.
			toServer := transportFunc(func(r *http.Request) (*http.Response, error) {
				r.URL.Scheme, r.URL.Host = "http", srv.Listener.Addr().String()
				return http.DefaultTransport.RoundTrip(r)
			})
			p, err := oauth.New("generic", oauth.Config{
				ClientID: client, ClientSecret: secret.New("s"), RedirectURL: "http://127.0.0.1:1/callback",
				AuthURL: srv.URL + "/authorize", TokenURL: tokenURL, Transport: toServer,
				Generic: oauth.GenericSettings{UserinfoURL: srv.URL + "/userinfo"},
			})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := p.Complete(context.Background(), secret.New("code"), secret.New("verifier-verifier-verifier-verifier-0123"))
			if err != nil {
				t.Fatal(err)
			}
			if tok.PlatformUserID != tc.wantID || tok.Username != "ann" || userinfoCalls.Load() != tc.wantUserinfo {
				t.Errorf("identity %q %q after %d userinfo calls; want %q ann after %d", tok.PlatformUserID, tok.Username, userinfoCalls.Load(), tc.wantID, tc.wantUserinfo)
			}
		})
	}
}

type transportFunc func(*http.Request) (*http.Response, error)

func (f transportFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
