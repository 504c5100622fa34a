package caddymodule

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// healthyDatabase is what verify should pass on: every connected account
// sealed under the running key, no plaintext, recent audit events with
// good success rates, and a refresh job waiting.
func healthyDatabase(t *testing.T) string {
	t.Helper()
	return healthyDatabaseOn(t, pgtest.Database(t))
}

// healthyDatabaseOn makes the migrated database at url healthy.
func healthyDatabaseOn(t *testing.T, url string) string {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.Pool(t, url)
	keys, err := vault.NewKeyring(vault.KeyConfig{MasterKey: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, platform := range []string{"twitter", "linkedin"} {
		a, err := vault.NewAccounts(keys).Upsert(ctx, pool, vault.Connection{UserID: []string{alice, bob}[i], Platform: platform,
			Credentials: vault.Credentials{AccessToken: secret.New("a"), RefreshToken: secret.New("r"), Expiry: time.Now().Add(2 * time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := vault.ScheduleRenewal(ctx, pool, a.ID, a.Version, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (action, status, platform, flow, duration_ms)
		SELECT 'connect', 'success', p, 'new', 3000 FROM unnest(ARRAY['twitter', 'linkedin']) p, generate_series(1, 20)`)
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (action, status, platform) SELECT 'refresh', 'success', 'twitter' FROM generate_series(1, 20)`)
	// The back end reads both platforms' tokens through credgate.
	pgtest.Exec(t, url, `INSERT INTO backend_reads (platform, via, bucket, reads)
		VALUES ('twitter', 'token_api', date_trunc('minute', now()), 12), ('linkedin', 'egress', date_trunc('minute', now()), 3)`)
	return url
}

// Not parallel: the commands read keys from the environment.
func TestVerifyPassesOnAHealthyDatabaseAndNamesEachBrokenPrecondition(t *testing.T) {
	t.Setenv(vault.EnvMasterKey, testKey(1))
	t.Setenv(vault.EnvPreviousKeys, "")
	// The healthy database has 20 attempts on twitter and linkedin.
	verify := []string{"verify", "--min-samples", "20", "--platforms", "twitter,linkedin"}
	out, err := runCLI(t, append(verify, "--database-url", healthyDatabase(t))...)
	if err != nil || !strings.Contains(out, "All 13 checks passed.") || strings.Contains(out, "✗") {
		t.Fatalf("verify on a healthy database: %v\n%s", err, out)
	}

	cases := []struct {
		name, breakIt, want string
	}{
		{"plaintext left", `UPDATE social_accounts SET access_token = 'legacy' WHERE platform = 'twitter'`,
			"✗ encryption: no plaintext tokens left: 1 rows hold plaintext tokens"},
		{"a connected account without a blob", `INSERT INTO social_accounts (user_id, platform) VALUES (gen_random_uuid(), 'facebook')`,
			"✗ encryption: every connected account has an encrypted blob: 2 of 3"},
		{"RLS off", `ALTER TABLE oauth_states DISABLE ROW LEVEL SECURITY`,
			"✗ schema: row level security on credgate's tables: off on: oauth_states"},
		{"low success rate", `INSERT INTO credential_audit_log (action, status, platform, flow, error_code)
			SELECT 'connect', 'failed', 'twitter', 'new', 'provider_unavailable' FROM generate_series(1, 5)`,
			"✗ connections: twitter new flow success rate ≥ 95%: 80.0% (20 of 25)"},
		{"a blob under an unknown key", `UPDATE social_accounts SET credentials_key_id = 7 WHERE platform = 'linkedin'`,
			"✗ keys: every blob's key is in the keyring: blobs under key 7 (1 rows)"},
		{"a dead job", `UPDATE token_refresh_queue SET status = 'dead', last_error = 'provider_unavailable'
			WHERE social_account_id = (SELECT id FROM social_accounts WHERE platform = 'twitter')`,
			"✗ refresh: no account stuck (dead or overdue jobs): 1 dead"},
		{"an overdue job", `UPDATE token_refresh_queue SET run_at = now() - interval '1 hour'`,
			"✗ refresh: no account stuck (dead or overdue jobs): 0 dead, 2 overdue"},
		{"no audit events", `TRUNCATE credential_audit_log`, "✗ audit: events recorded in the last 24h0m0s: 0 events"},
		{"transition mode on", `INSERT INTO credgate_settings (name, value) VALUES ('transition_mode', 'on')`,
			"✗ app: transition mode off: transition mode is on"},
		{"a platform the back end does not read through credgate", `DELETE FROM backend_reads WHERE platform = 'linkedin'`,
			"✗ app: the back end reads tokens through credgate: no token API or egress read in the last 24h0m0s on linkedin (1 accounts)"},
		{"the app's table lost a column credgate writes", `ALTER TABLE social_accounts DROP COLUMN username`,
			"✗ app table: what credgate's statements need: (1) social_accounts has no column username: credgate writes the account's name at the platform there; fix: ALTER TABLE social_accounts ADD COLUMN username text\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := healthyDatabase(t)
			pgtest.Exec(t, url, `ALTER TABLE credential_audit_log DISABLE TRIGGER credential_audit_log_append_only`)
			pgtest.Exec(t, url, tc.breakIt)
			out, err := runCLI(t, append(verify, "--database-url", url)...)
			if err == nil || !strings.Contains(err.Error(), "checks failed") {
				t.Errorf("verify exited cleanly: %v", err)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
			if n := strings.Count(out, "✗"); n != 1 {
				t.Errorf("%d failed checks, want only the broken one:\n%s", n, out)
			}
		})
	}
}

// A success rate is judged only on enough attempts, for every configured
// platform, traffic or not; declines are shown apart and never count.
// Not parallel: the commands read keys from the environment.
func TestVerifySaysTooFewAttemptsAndCountsDeclinesApart(t *testing.T) {
	t.Setenv(vault.EnvMasterKey, testKey(1))
	t.Setenv(vault.EnvPreviousKeys, "")
	url := healthyDatabase(t)
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (action, status, platform, flow) VALUES ('connect', 'success', 'facebook', 'new')`)
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (action, status, platform, flow, error_code)
		SELECT 'connect', 'failed', 'twitter', 'new', 'access_denied' FROM generate_series(1, 30)`)
	out, err := runCLI(t, "verify", "--database-url", url)
	if err != nil {
		t.Fatalf("verify failed on too few attempts: %v\n%s", err, out)
	}
	for _, want := range []string{
		"⚠ connections: facebook new flow success rate ≥ 95%: not judged: 1 of 50 attempts needed (100.0% so far)\n",
		"⚠ connections: instagram new flow success rate ≥ 95%: not judged: no attempts in the last 24h0m0s\n",
		"⚠ connections: twitter new flow success rate ≥ 95%: not judged: 20 of 50 attempts needed (100.0% so far); 30 declined at the consent screen, not counted\n",
		"⚠ token refresh: twitter success rate ≥ 95%: not judged: 20 of 50 attempts needed",
		"10 checks passed; 5 not judged: too few attempts (--min-samples 50).",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "✓ connections") {
		t.Errorf("a platform below min-samples passed:\n%s", out)
	}
	// Enough of them: judged, the declines still apart.
	out, err = runCLI(t, "verify", "--database-url", url, "--min-samples", "20", "--platforms", "twitter")
	if err != nil || !strings.Contains(out, "✓ connections: twitter new flow success rate ≥ 95%: 100.0% (20 of 20); 30 declined at the consent screen, not counted\n") {
		t.Errorf("verify --min-samples 20: %v\n%s", err, out)
	}
	out, _ = runCLI(t, "report", "--database-url", url)
	if !strings.Contains(out, "DECLINED") {
		t.Errorf("report does not show declines apart:\n%s", out)
	}
	// Both arms, as the runbook compares them: the legacy flow's line,
	// and the gap once both are judged (new 20 of 22 = 90.9 %, legacy
	// 100 %: more than 5 points below).
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (action, status, platform, flow)
		SELECT 'connect', 'success', 'twitter', 'legacy' FROM generate_series(1, 20)`)
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (action, status, platform, flow, error_code)
		SELECT 'connect', 'failed', 'twitter', 'new', 'provider_unavailable' FROM generate_series(1, 2)`)
	out, err = runCLI(t, "verify", "--database-url", url, "--min-samples", "20", "--platforms", "twitter", "--min-success-rate", "0.9")
	for _, want := range []string{
		"✓ connections: twitter new flow success rate ≥ 90%: 90.9% (20 of 22)",
		"✓ connections: twitter legacy flow success rate ≥ 90%: 100.0% (20 of 20)",
		"✗ connections: twitter new flow within 5 points of the legacy flow: new 90.9%, legacy 100.0%",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify lacks %q:\n%s", want, out)
		}
	}
	if err == nil {
		t.Error("verify passed with the new flow 9 points below the legacy flow")
	}
}

func TestReportAndCleanupCommands(t *testing.T) {
	t.Parallel()
	url := healthyDatabase(t)
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (action, status, platform, flow, error_code)
		VALUES ('connect', 'failed', 'twitter', 'new', 'access_denied')`)
	out, err := runCLI(t, "report", "--database-url", url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Events by action and status", "connect  success  40", "twitter   new   20       0       100.0%  1         3s",
		"Recent failures", "access_denied", "Daily (from the roll-up"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "report", "--database-url", url, "--json", "--since", "1h")
	var rep struct {
		Connections []struct {
			Platform string
			Rate     float64
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Connections) != 2 {
		t.Fatalf("report --json: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "report", "--database-url", url, "--since", "-1h"); err == nil {
		t.Error("a negative --since was accepted")
	}

	pgtest.Exec(t, url, `INSERT INTO oauth_states (state_hash, user_id, platform, redirect_uri, expires_at)
		SELECT sha256(i::text::bytea), gen_random_uuid(), 'twitter', 'http://x/cb', now() - interval '1 minute' FROM generate_series(1, 7) i`)
	out, err = runCLI(t, "cleanup", "--database-url", url)
	if err != nil || !strings.Contains(out, "✓ deleted 7 expired OAuth states") {
		t.Fatalf("cleanup: %v %s", err, out)
	}
	out, err = runCLI(t, "cleanup", "--database-url", url)
	if err != nil || !strings.Contains(out, "✓ deleted 0 expired OAuth states") {
		t.Fatalf("second cleanup: %v %s", err, out)
	}
}
