package oauth_test

import (
	"context"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/credgate/credgate/internal/oauthtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
)

// auth_style: basic works against a basic-only server, post against a
// post-only one, auto against both (remembering what worked), and a
// mismatched style is invalid_client.
func TestGenericAuthStyles(t *testing.T) {
	t.Parallel()
	const redirect = "http://127.0.0.1:1/callback"
	run := func(t *testing.T, serverPost bool, style string) (oauth.TokenSet, error, *atomic.Int32) {
		ts, calls := oauthtest.GoOAuth2Server(t, redirect, serverPost)
		p, err := oauth.New("acme", oauth.Config{
			Kind: "generic", ClientID: "client-id", ClientSecret: secret.New("client-secret-7f3a9c"), RedirectURL: redirect,
			AuthURL: ts.URL + "/authorize", TokenURL: ts.URL + "/token", Scopes: []string{"all"},
			Generic: oauth.GenericSettings{AuthStyle: style},
		})
		if err != nil {
			t.Fatal(err)
		}
		if p.Name() != "acme" {
			t.Fatalf("name %q", p.Name())
		}
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
		code := loc.Query().Get("code")
		if resp.StatusCode != http.StatusFound || code == "" {
			t.Fatalf("authorize: %d %s", resp.StatusCode, loc)
		}
		tok, err := p.Complete(context.Background(), secret.New(code), start.Verifier)
		if err == nil {
			_, err = p.Refresh(context.Background(), tok)
		}
		return tok, err, calls
	}
	for _, c := range []struct {
		name       string
		serverPost bool
		style      string
		ok         bool
	}{
		{"basic server, basic", false, "basic", true},
		{"basic server, auto (the default)", false, "", true},
		{"basic server, post", false, "post", false},
		{"post server, post", true, "post", true},
		{"post server, auto", true, "auto", true},
		{"post server, basic", true, "basic", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err, _ := run(t, c.serverPost, c.style)
			if c.ok && err != nil {
				t.Fatalf("exchange and refresh: %v", err)
			}
			if !c.ok {
				wantCode(t, err, oauth.CodeInvalidClient)
			}
		})
	}
	if _, err := oauth.New("acme", oauth.Config{Kind: "generic", ClientID: "x", ClientSecret: secret.New("y"), RedirectURL: redirect,
		AuthURL: "http://a/", TokenURL: "http://a/t", Generic: oauth.GenericSettings{AuthStyle: "jwt"}}); err == nil {
		t.Error("auth_style jwt accepted")
	}
}

// A generic provider may take a name of its own, never a built-in
// platform's, and only the generic kind may.
func TestProviderNames(t *testing.T) {
	t.Parallel()
	cfg := func(kind string) oauth.Config {
		return oauth.Config{Kind: kind, ClientID: "x", ClientSecret: secret.New("y"), RedirectURL: "http://127.0.0.1:1/cb",
			AuthURL: "http://a/auth", TokenURL: "http://a/token"}
	}
	for _, name := range []string{"acme", "corp-sso", "idp_2"} {
		if _, err := oauth.New(name, cfg("generic")); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	for _, name := range []string{"twitter", "Acme", "9lives", "a/b", "", "with space"} {
		if _, err := oauth.New(name, cfg("generic")); err == nil {
			t.Errorf("generic provider named %q accepted", name)
		}
	}
	if _, err := oauth.New("acme", cfg("twitter")); err == nil {
		t.Error("a twitter provider named acme accepted")
	}
}
