package sandbox_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/sandbox"
)

// A staging check or a benchmark of renewals can shorten Twitter's two
// hours: the token answer says so, and the token dies when it says.
func TestAccessTokenLifeCanBeSet(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true, AccessTTL: map[string]sandbox.Duration{"twitter": sandbox.Duration(2 * time.Minute)}})
	resp, _ := get(t, twitterAuthorize(base, nil))
	loc, _ := url.Parse(resp.Header.Get("Location"))
	_, m := redeemTwitter(base, loc.Query().Get("code"), "verifier-verifier-verifier-verifier-verif")
	access, _ := m["access_token"].(string)
	if m["expires_in"] != float64(120) || access == "" {
		t.Fatalf("token answer with a 2m life: %v", m)
	}
	if code := twitterMe(t, base, access); code != 200 {
		t.Fatalf("the new token: %d", code)
	}
	s.Clock().Advance(2 * time.Minute)
	if code := twitterMe(t, base, access); code != 401 {
		t.Errorf("two minutes on: %d, want 401", code)
	}
	for cfg, want := range map[string]sandbox.Config{
		`"facebook" is not a platform`: {AccessTTL: map[string]sandbox.Duration{"facebook": sandbox.Duration(time.Hour)}},
		"shorter than a second":        {AccessTTL: map[string]sandbox.Duration{"linkedin": 0}},
	} {
		if err := want.Check(); err == nil || !strings.Contains(err.Error(), cfg) {
			t.Errorf("Check: %v, want an error saying %s", err, cfg)
		}
	}
}
