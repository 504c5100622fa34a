package caddymodule

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
)

// The gateway with its database_url through PgBouncer in transaction mode
// (what Supabase's pooler on 6543 is, and many self-hosted PgBouncers):
// connects on all four platforms, the token API, a renewal, egress, the
// guard's shared window and service-health work; the commands work
// through it too, and migrate refuses at once, saying what to use.
func TestTheGatewayWorksThroughATransactionPooler(t *testing.T) {
	direct := pgtest.Database(t)
	through := pgtest.Bouncer(t, direct)
	h := newHarness(t, harnessOptions{databaseURL: through, metrics: true,
		tokenAPI:      "service_token " + serviceToken,
		egress:        "service_token " + serviceToken,
		globalOptions: "guard {\n\t\t\tmin_samples 50\n\t\t\twindow 10m\n\t\t}"})
	// The test's own queries go direct: credgate alone goes through the
	// pooler.
	h.db = direct
	for p := range postPaths {
		h.connect(alice, p)
		h.connect(bob, p)
	}
	code, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || !h.worksAtSandbox("twitter", tok.AccessToken) {
		t.Fatalf("token API through the pooler: %d %s", code, body)
	}
	// A renewal: near expiry the token API renews first.
	before := h.sandbox.Stats()["twitter"].Refreshes
	h.sandbox.Clock().Advance(117 * time.Minute)
	code, renewed, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || renewed.AccessToken == tok.AccessToken || h.sandbox.Stats()["twitter"].Refreshes != before+1 {
		t.Fatalf("renewal through the pooler: %d %s", code, body)
	}
	for p, path := range postPaths {
		if code, body := h.egressCall("POST", path+"?fields=id", bob, serviceToken, `{"text":"hello"}`); code/100 != 2 {
			t.Fatalf("egress %s through the pooler: %d %s", p, code, body)
		}
	}
	resp, body := h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("service-health through the pooler: %d %s", resp.StatusCode, body)
	}
	// The guard's window (every replica's outcomes) and the decisions and
	// back-end reads are written every second.
	waitUntil(t, 10*time.Second, func() bool {
		return h.count(`SELECT coalesce(sum(successes), 0) FROM rollout_outcomes WHERE arm = 'new'`) >= 8 &&
			h.count(`SELECT coalesce(sum(reads), 0) FROM backend_reads`) >= 6
	})
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'success'`); n != 8 {
		t.Fatalf("%d connect audit rows, want 8", n)
	}

	// The commands, through the pooler.
	t.Setenv("ENCRYPTION_MASTER_KEY", testKey(1))
	for _, args := range [][]string{
		{"report", "--database-url", through},
		{"rollout", "status", "--database-url", through},
		{"backfill", "--database-url", through},
		{"writeback", "--all", "--dry-run", "--database-url", through},
		{"cleanup", "--database-url", through},
		{"migrate", "status", "--database-url", through},
	} {
		if out, err := runCLI(t, args...); err != nil {
			t.Errorf("%s through the pooler: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
	}
	out, err := runCLI(t, "migrate", "up", "--database-url", through)
	oneErrorLine(t, "migrate up through the pooler", out, err, "migrate needs a direct or session-mode connection")
}
