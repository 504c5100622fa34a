package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// seedAuditDays writes audit rows over the last days days: per day a
// connect by alice, a refresh by bob, and a token_read row of alice's
// counting 40 reads (with an account_id in its details, as the refresh
// worker's rows have).
func seedAuditDays(t *testing.T, url string, days int) {
	t.Helper()
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (created_at, user_id, platform, action, status, flow, events, details)
		SELECT now() - d * interval '1 day', u, 'twitter', a, 'success', f, n, jsonb_build_object('account_id', 'acct-' || u)
		FROM generate_series(0, $1::int - 1) d,
		     (VALUES ($2::uuid, 'connect', 'new', 1), ($3::uuid, 'refresh', NULL, 1), ($2::uuid, 'token_read', NULL, 40)) AS r(u, a, f, n)`,
		days, alice, bob)
}

// dailyTotals is report's daily breakdown as day → action → events.
func dailyTotals(t *testing.T, pool *pgxpool.Pool) map[string]map[string]int64 {
	t.Helper()
	days, err := report.Daily(context.Background(), pool, time.Now(), 30)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]int64{}
	for _, d := range days {
		if out[d.Day] == nil {
			out[d.Day] = map[string]int64{}
		}
		out[d.Day][d.Action+"/"+d.Status] += d.Events
	}
	return out
}

// withoutActions drops the lifecycle's own rows from a daily breakdown.
func withoutActions(days map[string]map[string]int64, actions ...vault.Action) map[string]map[string]int64 {
	for _, byAction := range days {
		for _, a := range actions {
			delete(byAction, string(a)+"/success")
		}
	}
	return days
}

func sameTotals(a, b map[string]map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for day, x := range a {
		y := b[day]
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if y[k] != v {
				return false
			}
		}
	}
	return true
}

// prune exports the rows before the cutoff, in batches, and then deletes
// exactly those; report's daily counts do not change; a plain DELETE is
// still refused; an export is never overwritten (issue 25: the log grew
// without bound, and the append-only rule refused every DELETE).
func TestAuditPruneExportsThenDeletesExactlyTheRowsBeforeTheCutoff(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	ctx := context.Background()
	seedAuditDays(t, url, 10)
	cutoff := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -5)
	var wantIDs []int64
	rows, _ := pool.Query(ctx, `SELECT id FROM credential_audit_log WHERE created_at < $1 ORDER BY id`, cutoff)
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		wantIDs = append(wantIDs, id)
	}
	if rows.Err() != nil || len(wantIDs) < 12 {
		t.Fatalf("%d rows before the cutoff (%v), want the seeded days'", len(wantIDs), rows.Err())
	}
	var kept int
	pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE created_at >= $1`, cutoff).Scan(&kept)
	before := dailyTotals(t, pool)
	// A row of 40 token reads counts 40 in report, live and rolled up.
	for _, ago := range []int{0, 8} {
		day := time.Now().UTC().AddDate(0, 0, -ago).Format(time.DateOnly)
		if n := before[day]["token_read/success"]; n != 40 {
			t.Errorf("report counts %d token reads on %s, want 40", n, day)
		}
	}

	export := filepath.Join(t.TempDir(), "audit.jsonl")
	out, err := runCLI(t, "audit", "prune", "--before", cutoff.Format(time.DateOnly), "--export", export, "--batch-size", "4", "--database-url", url)
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	if !strings.Contains(out, "rows (") || !strings.Contains(out, "exported to "+export+" and deleted") {
		t.Errorf("prune printed:\n%s", out)
	}

	// The file holds each deleted row once, every column of it.
	f, err := os.Open(export)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var gotIDs []int64
	var events int64
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		var row struct {
			ID        int64          `json:"id"`
			CreatedAt time.Time      `json:"created_at"`
			UserID    *string        `json:"user_id"`
			Action    string         `json:"action"`
			Events    int64          `json:"events"`
			Details   map[string]any `json:"details"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &row); err != nil {
			t.Fatalf("line %q: %v", scanner.Text(), err)
		}
		if !row.CreatedAt.Before(cutoff) || row.UserID == nil || row.Action == "" || row.Events < 1 || row.Details["account_id"] == nil {
			t.Errorf("exported row %s", scanner.Text())
		}
		gotIDs = append(gotIDs, row.ID)
		events += row.Events
	}
	slices.Sort(gotIDs)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("exported ids %v, want %v", gotIDs, wantIDs)
	}
	if want := int64(len(wantIDs)/3) * 42; events != want {
		t.Errorf("exported rows stand for %d events, want %d", events, want)
	}

	// Exactly those rows are gone: the rest stay, with prune's own row.
	var left, older, pruned int
	pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE action <> 'audit_pruned'), count(*) FILTER (WHERE created_at < $1),
		count(*) FILTER (WHERE action = 'audit_pruned' AND (details->>'rows')::int = $2 AND user_id IS NULL)
		FROM credential_audit_log`, cutoff, len(wantIDs)).Scan(&left, &older, &pruned)
	if left != kept || older != 0 || pruned != 1 {
		t.Errorf("after prune: %d rows kept (want %d), %d before the cutoff (want 0), %d audit_pruned rows (want 1)", left, kept, older, pruned)
	}
	if after := withoutActions(dailyTotals(t, pool), vault.ActionAuditPruned); !sameTotals(before, after) {
		t.Errorf("report's daily counts changed:\nbefore %v\nafter  %v", before, after)
	}

	if _, err := pool.Exec(ctx, `DELETE FROM credential_audit_log WHERE action = 'connect'`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Errorf("a plain DELETE after prune: %v, want the append-only refusal", err)
	}
	// The same file again: refused, the first export untouched.
	size := fileSize(t, export)
	if out, err := runCLI(t, "audit", "prune", "--before", "2d", "--export", export, "--database-url", url); err == nil ||
		!strings.Contains(err.Error(), "already exists") || strings.Count(out, "\n") != 1 {
		t.Errorf("prune into an existing file: %v\n%s", err, out)
	}
	if fileSize(t, export) != size {
		t.Error("a refused prune changed the earlier export")
	}

	// To standard output: the lines there, the summary on standard error
	// (runCLI shows both).
	// 60 hours back: the rows of 5, 4 and 3 days ago.
	out, err = runCLI(t, "audit", "prune", "--before", time.Now().Add(-60*time.Hour).Format(time.RFC3339), "--export", "-", "--database-url", url)
	if err != nil || strings.Count(out, `"action":"connect"`) != 3 || !strings.Contains(out, "to standard output and deleted") {
		t.Errorf("prune to standard output: %v\n%s", err, out)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// A cutoff inside a day the roll-up cannot hold yet (it is not over) is
// refused before anything is written or deleted.
func TestAuditPruneRefusesRowsOfADayNotRolledUp(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (created_at, action, status) VALUES (now() - interval '2 minutes', 'connect', 'success')`)
	export := filepath.Join(t.TempDir(), "audit.jsonl")
	out, err := runCLI(t, "audit", "prune", "--before", "1m", "--export", export, "--database-url", url)
	if err == nil || !strings.Contains(err.Error(), "not in the daily roll-up yet") || out != "Error: "+err.Error()+"\n" {
		t.Fatalf("prune of today's rows: %v\n%s", err, out)
	}
	if _, err := os.Stat(export); !os.IsNotExist(err) {
		t.Errorf("a refused prune created the export: %v", err)
	}
	var n int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM credential_audit_log`).Scan(&n)
	if n != 1 {
		t.Errorf("%d audit rows after a refused prune, want 1", n)
	}
}

// Bad input: one line, exit 1, nothing done.
func TestAuditCommandsRefuseBadInputInOneLine(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	export := filepath.Join(t.TempDir(), "x.jsonl")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "prune", "--export", export}, "--before is required"},
		{[]string{"audit", "prune", "--before", "last tuesday", "--export", export}, "is not a date"},
		{[]string{"audit", "prune", "--before", "0d", "--export", export}, "whole number of days"},
		{[]string{"audit", "prune", "--before", "2999-01-01", "--export", export}, "is not in the past"},
		{[]string{"audit", "prune", "--before", "90d"}, "--export is required"},
		{[]string{"audit", "prune", "--before", "90d", "--export", export, "--batch-size", "0"}, "--batch-size must be"},
		{[]string{"audit", "prune", "--before", "90d", "--export", filepath.Join(t.TempDir(), "no", "such", "dir.jsonl")}, "--export: open"},
		{[]string{"erase-user", "not-a-uuid"}, `"not-a-uuid" is not a user id`},
		{[]string{"erase-user", alice, "--revoke"}, "--revoke needs --config"},
		{[]string{"erase-user", alice, "--revoke", "--config", filepath.Join(t.TempDir(), "missing")}, "--config: open"},
	} {
		out, err := runCLI(t, append(tc.args, "--database-url", url)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || out != "Error: "+err.Error()+"\n" {
			t.Errorf("%v: %v\n%s\nwant one line with %q", tc.args, err, out, tc.want)
		}
	}
	if _, err := os.Stat(export); !os.IsNotExist(err) {
		t.Errorf("bad input created the export: %v", err)
	}
}

// erase-user deletes the user's accounts (their refresh jobs with them),
// OAuth states and id, leaves no row naming them, and report's counts do
// not change; running it again does nothing; another user is untouched.
func TestEraseUserLeavesNoRowWithTheUserIDAndTheCountsUnchanged(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	ctx := context.Background()
	seedAuditDays(t, url, 3)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token) VALUES ($1, 'twitter', 'a'), ($1, 'linkedin', NULL), ($2, 'twitter', 'b')`, alice, bob)
	pgtest.Exec(t, url, `INSERT INTO token_refresh_queue (social_account_id) SELECT id FROM social_accounts`)
	pgtest.Exec(t, url, `INSERT INTO renewal_leases (account_id, owner, until) SELECT id::text, 'test', now() + interval '1 minute' FROM social_accounts`)
	pgtest.Exec(t, url, `INSERT INTO oauth_states (state_hash, user_id, platform, redirect_uri) VALUES (sha256('s1'), $1, 'twitter', 'x'), (sha256('s2'), $2, 'twitter', 'x')`, alice, bob)
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (user_id, platform, action, status, details)
		SELECT $1, 'twitter', 'refresh', 'success', jsonb_build_object('account_id', id, 'trigger', 'refresh_worker') FROM social_accounts WHERE user_id = $1`, alice)
	rep := func() (report.Report, map[string]map[string]int64) {
		r, err := report.Build(ctx, pool, time.Now(), 30*24*time.Hour, 7)
		if err != nil {
			t.Fatal(err)
		}
		return r, dailyTotals(t, pool)
	}
	reportBefore, dailyBefore := rep()
	var bobRows int
	pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE user_id = $1`, bob).Scan(&bobRows)

	out, err := runCLI(t, "erase-user", alice, "--database-url", url)
	if err != nil || !strings.Contains(out, "✓ erase-user: deleted 2 accounts (linkedin, twitter) and 1 OAuth states; cleared the user id from 8 audit rows") {
		t.Fatalf("erase-user: %v\n%s", err, out)
	}
	for _, q := range []string{
		`SELECT count(*) FROM social_accounts WHERE user_id = $1`,
		`SELECT count(*) FROM oauth_states WHERE user_id = $1`,
		`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 OR details::text LIKE '%' || $1 || '%'`,
		`SELECT count(*) FROM credential_audit_log WHERE details ? 'account_id' AND details->>'account_id' NOT LIKE 'acct-%' AND user_id IS DISTINCT FROM $1::uuid
			AND action = 'refresh' AND details->>'trigger' = 'refresh_worker'`,
	} {
		var n int
		if err := pool.QueryRow(ctx, q, alice).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d (%v), want 0", q, n, err)
		}
	}
	var jobs, leases, bobAccounts, bobStates, bobAudit int
	pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM token_refresh_queue), (SELECT count(*) FROM renewal_leases),
		(SELECT count(*) FROM social_accounts WHERE user_id = $1), (SELECT count(*) FROM oauth_states WHERE user_id = $1),
		(SELECT count(*) FROM credential_audit_log WHERE user_id = $1)`, bob).Scan(&jobs, &leases, &bobAccounts, &bobStates, &bobAudit)
	if jobs != 1 || leases != 1 || bobAccounts != 1 || bobStates != 1 || bobAudit != bobRows {
		t.Errorf("after erasing alice: %d jobs, %d leases, bob %d accounts, %d states, %d audit rows; want 1, 1 and bob's own 1, 1, %d",
			jobs, leases, bobAccounts, bobStates, bobAudit, bobRows)
	}
	reportAfter, dailyAfter := rep()
	eventsWithout := func(r report.Report) []report.EventCount {
		return slices.DeleteFunc(slices.Clone(r.Events), func(e report.EventCount) bool { return e.Action == string(vault.ActionUserErased) })
	}
	if !slices.Equal(eventsWithout(reportBefore), eventsWithout(reportAfter)) {
		t.Errorf("report's events changed:\nbefore %v\nafter  %v", reportBefore.Events, reportAfter.Events)
	}
	if !sameTotals(dailyBefore, withoutActions(dailyAfter, vault.ActionUserErased)) {
		t.Errorf("report's daily counts changed:\nbefore %v\nafter  %v", dailyBefore, dailyAfter)
	}
	var erasedRow int
	pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE action = 'user_erased' AND user_id IS NULL
		AND (details->>'accounts')::int = 2 AND (details->>'audit_rows')::int = 8`).Scan(&erasedRow)
	if erasedRow != 1 {
		t.Error("no user_erased row with the counts")
	}

	out, err = runCLI(t, "erase-user", alice, "--database-url", url)
	if err != nil || !strings.Contains(out, "deleted 0 accounts and 0 OAuth states; cleared the user id from 0 audit rows") {
		t.Errorf("erase-user again: %v\n%s", err, out)
	}
	if _, err := pool.Exec(ctx, `UPDATE credential_audit_log SET user_id = NULL WHERE user_id = $1`, bob); err == nil {
		t.Error("a plain UPDATE of the audit log succeeded after an erasure")
	}
}

// With --revoke, each token is revoked at its platform where it can be,
// with the running config's providers, before the accounts go; reads the
// instance counted before the erasure are written without the user id.
// Not parallel: the keys come from the environment, and Caddy is one per
// process.
func TestEraseUserRevokesAtThePlatform(t *testing.T) {
	t.Setenv(vault.EnvMasterKey, testKey(1))
	t.Setenv(vault.EnvPreviousKeys, "")
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken})
	tokens := map[string]string{}
	for _, p := range []string{"twitter", "facebook", "linkedin"} {
		h.connect(alice, p)
		code, tok, body := h.fetchToken(h.internal, alice, p, serviceToken)
		if code != 200 {
			t.Fatalf("%s token: %d %s", p, code, body)
		}
		tokens[p] = tok.AccessToken
	}
	h.connect(bob, "twitter")
	config := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(config, []byte(h.caddyfile("")), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, "erase-user", alice, "--revoke", "--config", config, "--database-url", h.db)
	if err != nil {
		t.Fatalf("erase-user --revoke: %v\n%s", err, out)
	}
	for _, want := range []string{
		"✓ twitter: token revoked at the platform\n",
		"✓ facebook: token revoked at the platform\n",
		"✓ linkedin: the platform has no revocation",
		"✓ erase-user: deleted 3 accounts (facebook, linkedin, twitter)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("erase-user output lacks %q:\n%s", want, out)
		}
	}
	for _, p := range []string{"twitter", "facebook"} {
		if h.worksAtSandbox(p, tokens[p]) {
			t.Errorf("%s: the token still works at the platform", p)
		}
	}
	// The gateway serves a token it read within worker.RecentFor again;
	// an erasure by another process is seen once that has passed.
	h.sandbox.Clock().Advance(worker.RecentFor)
	if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != 404 || errorCode(body) != "not_connected" {
		t.Errorf("token API after erasure: %d %s", code, body)
	}
	// The reads above were counted before and after the erasure; the
	// window is written now, without alice's id.
	h.flushReadAudit()
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1`, alice); n != 0 {
		t.Errorf("%d audit rows name the erased user", n)
	}
	if n := h.count(`SELECT coalesce(sum(events), 0)::int FROM credential_audit_log WHERE action = 'token_read' AND user_id IS NULL`); n != 4 {
		t.Errorf("%d token reads counted without a user id, want alice's 4", n)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'revoke' AND status = 'success' AND user_id IS NULL AND details->>'during' = 'erasure'`); n != 2 {
		t.Errorf("%d revoke rows for the erasure, want 2", n)
	}
	if code, _, _ := h.fetchToken(h.internal, bob, "twitter", serviceToken); code != 200 {
		t.Errorf("bob's token after alice's erasure: %d", code)
	}
}
