package oauth_test

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
)

// mockoidc keeps its sessions in an unlocked map; the tests here that use
// it take turns.
var mockoidcMu sync.Mutex

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
	authorize := func(subject string) (oauth.Start, string) {
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
