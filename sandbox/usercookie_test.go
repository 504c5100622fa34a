package sandbox_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/credgate/credgate/sandbox"
)

// The person signed in at the platform (the sandbox_user cookie the demo
// page sets) is whose account a consent grants: the consent page
// proposes them, and two people get two accounts. Without the cookie it
// is "sandbox-user"; the form's own field still wins.
func TestTheSignedInUserIsWhoseAccountIsGranted(t *testing.T) {
	t.Parallel()
	_, base := start(t, sandbox.Config{})
	// account approves one Twitter consent with the cookie (if any) and
	// the form's field (if any), redeems the code and asks who it is.
	account := func(cookie, field string) (id, username string) {
		t.Helper()
		verifier := "verifier-verifier-verifier-verifier-verif"
		authorize := twitterAuthorize(base, nil)
		form := url.Values{"decision": {"approve"}}
		if field != "" {
			form.Set("sandbox_user", field)
		}
		req, _ := http.NewRequest(http.MethodPost, authorize, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: sandbox.UserCookie, Value: cookie})
		}
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		tok, err := http.NewRequest(http.MethodPost, base+"/twitter/2/oauth2/token", strings.NewReader(url.Values{
			"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {twitterCallback},
			"code_verifier": {verifier}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		tok.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		tok.SetBasicAuth("twitter-client-id", "twitter-client-secret")
		resp, err = client.Do(tok)
		if err != nil {
			t.Fatal(err)
		}
		var pair struct {
			AccessToken string `json:"access_token"`
		}
		json.NewDecoder(resp.Body).Decode(&pair)
		resp.Body.Close()
		me, _ := http.NewRequest(http.MethodGet, base+"/twitter/2/users/me", nil)
		me.Header.Set("Authorization", "Bearer "+pair.AccessToken)
		resp, err = client.Do(me)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var profile struct {
			Data struct{ ID, Username string } `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&profile); err != nil || profile.Data.ID == "" {
			t.Fatalf("profile: %d %v", resp.StatusCode, err)
		}
		return profile.Data.ID, profile.Data.Username
	}

	aliceID, alice := account("alice", "")
	bobID, bob := account("bob", "")
	if alice != "alice" || bob != "bob" || aliceID == bobID {
		t.Errorf("with the cookie: alice is %s (%s), bob is %s (%s); want their own accounts", alice, aliceID, bob, bobID)
	}
	if againID, _ := account("alice", ""); againID != aliceID {
		t.Errorf("alice's account changed between consents: %s, then %s", aliceID, againID)
	}
	if _, who := account("", ""); who != "sandbox-user" {
		t.Errorf("without the cookie: %s, want sandbox-user", who)
	}
	if _, who := account("alice", "carol"); who != "carol" {
		t.Errorf("the form's sandbox_user with the cookie: %s, want carol", who)
	}

	// The consent page proposes the signed-in user.
	req, _ := http.NewRequest(http.MethodGet, twitterAuthorize(base, nil), nil)
	req.AddCookie(&http.Cookie{Name: sandbox.UserCookie, Value: "alice"})
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(page), `name="sandbox_user" value="alice"`) {
		t.Errorf("the consent page does not propose alice:\n%s", string(page))
	}
}
