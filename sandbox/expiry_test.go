package sandbox_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/credgate/credgate/sandbox"
)

// connectTwitter runs one Twitter connect against the sandbox and returns
// the access and refresh tokens.
func connectTwitter(t *testing.T, base string) (access, refresh string) {
	t.Helper()
	resp, _ := get(t, twitterAuthorize(base, nil))
	loc, _ := url.Parse(resp.Header.Get("Location"))
	_, m := redeemTwitter(base, loc.Query().Get("code"), "verifier-verifier-verifier-verifier-verif")
	access, _ = m["access_token"].(string)
	refresh, _ = m["refresh_token"].(string)
	if access == "" || refresh == "" {
		t.Fatalf("connect: %v", m)
	}
	return access, refresh
}

func twitterMe(t *testing.T, base, access string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/twitter/2/users/me", nil)
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A long demo or benchmark must not keep every code and token the
// sandbox ever issued: they are forgotten once they can no longer be
// used.
func TestTheSandboxForgetsWhatExpired(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true})
	for range 50 {
		connectTwitter(t, base)
	}
	// An unredeemed code, and the tokens: the codes go once a minute has
	// passed, the access tokens after their two hours, the refresh tokens
	// after their 180 days.
	get(t, twitterAuthorize(base, nil))
	if codes, tokens := s.Held(); codes != 51 || tokens != 100 {
		t.Fatalf("held after 50 connects: %d codes, %d tokens", codes, tokens)
	}
	s.Clock().Advance(3 * time.Hour)
	access, _ := connectTwitter(t, base)
	if codes, tokens := s.Held(); codes != 1 || tokens != 52 {
		t.Errorf("three hours on: %d codes, %d tokens held; want the new code, and the 50 refresh tokens with the new pair", codes, tokens)
	}
	if code := twitterMe(t, base, access); code != 200 {
		t.Errorf("the token just issued: %d", code)
	}
	s.Clock().Advance(181 * 24 * time.Hour)
	connectTwitter(t, base)
	if codes, tokens := s.Held(); codes != 1 || tokens != 2 {
		t.Errorf("181 days on: %d codes, %d tokens held; want only the newest connect's", codes, tokens)
	}
}

// Past the cap the oldest values go first, never the ones just issued.
func TestTheSandboxForgetsTheOldestPastItsCap(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true, MaxCodes: 20, MaxTokens: 40})
	first, _ := connectTwitter(t, base)
	var access, refresh string
	for range 100 {
		access, refresh = connectTwitter(t, base)
	}
	if codes, tokens := s.Held(); codes > 20 || tokens > 40 {
		t.Errorf("held %d codes and %d tokens past caps of 20 and 40", codes, tokens)
	}
	if code := twitterMe(t, base, first); code != 401 {
		t.Errorf("the oldest connect's token, forgotten: %d, want 401", code)
	}
	if code := twitterMe(t, base, access); code != 200 {
		t.Errorf("the newest connect's token: %d", code)
	}
	resp, m := refreshTwitter(base, refresh)
	if resp == nil || resp.StatusCode != 200 || m["access_token"] == nil {
		t.Errorf("the newest connect's refresh token: %v", m)
	}
}

func refreshTwitter(base, refresh string) (*http.Response, map[string]any) {
	return twitterToken(base, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
}
