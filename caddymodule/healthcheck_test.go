package caddymodule

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/credgate/credgate/connect"
	"github.com/credgate/credgate/internal/pgtest"
)

// The health check reports what a token read would find: a tampered
// blob is undecryptable and needs the user again (and is audited, once),
// while a valid blob whose key id column says otherwise is connected.
// Issue 26, item 8: the first showed as connected, needs_reauth false,
// the second as undecryptable, and nothing was audited.

// healthView is what the health check answers for each account.
type healthView = connect.AccountHealth

func TestHealthCheckReportsWhatATokenReadFinds(t *testing.T) {
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken})
	for _, p := range []string{"twitter", "linkedin", "facebook"} {
		h.connect(alice, p)
	}
	pgtest.Exec(t, h.db, `UPDATE social_accounts SET credentials_encrypted = `+pgtest.TamperedBlob+`
		WHERE platform = 'twitter'`)
	pgtest.Exec(t, h.db, `UPDATE social_accounts SET credentials_key_id = 7 WHERE platform = 'linkedin'`)

	health := func() map[string]healthView {
		t.Helper()
		resp, body := h.do("GET", "/api/credentials/health-check", alice, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("health-check: %d %s", resp.StatusCode, body)
		}
		var out struct{ Accounts []healthView }
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		byPlatform := map[string]healthView{}
		for _, a := range out.Accounts {
			byPlatform[a.Platform] = a
		}
		return byPlatform
	}
	got := health()
	for _, c := range []struct {
		platform, status string
		needsReauth      bool
		tokenCode        int
	}{
		{"twitter", "undecryptable", true, http.StatusInternalServerError},
		{"linkedin", "connected", false, http.StatusOK},
		{"facebook", "connected", false, http.StatusOK},
	} {
		if v := got[c.platform]; v.Status != c.status || v.NeedsReauth != c.needsReauth {
			t.Errorf("%s: status %q, needs_reauth %v; want %q, %v", c.platform, v.Status, v.NeedsReauth, c.status, c.needsReauth)
		}
		if code, _, body := h.fetchToken(h.internal, alice, c.platform, serviceToken); code != c.tokenCode {
			t.Errorf("%s: the token API answers %d %s, want %d", c.platform, code, body, c.tokenCode)
		}
	}
	health() // polled again: still one audit row
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'decrypt_failed' AND user_id = $1
		AND platform = 'twitter' AND details->>'during' = 'health_check'`, alice); n != 1 {
		t.Errorf("%d decrypt_failed rows from the health check, want 1", n)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'decrypt_failed' AND platform <> 'twitter'`); n != 0 {
		t.Errorf("%d decrypt_failed rows for accounts that open", n)
	}
}
