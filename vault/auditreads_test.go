package vault_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/vault"
)

// Token reads become one row per account, caller and outcome per window,
// with the count in events; reads for ids with no account at all become
// one row per platform, caller and outcome without a user id (issue 25:
// one client at 193 reads/s wrote about 6 GB of audit rows a day).
func TestReadAuditWritesOneRowPerAccountCallerAndOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	if _, err := pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform) VALUES ($1, 'twitter')`, alice); err != nil {
		t.Fatal(err)
	}
	audit := &vault.ReadAudit{Window: time.Minute}
	for range 1000 {
		audit.Count(vault.TokenRead{UserID: alice, Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Success, Source: "credentials_encrypted"})
	}
	audit.Count(vault.TokenRead{UserID: alice, Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Success, Source: "credentials_encrypted", Refreshed: true})
	for range 3 {
		audit.Count(vault.TokenRead{UserID: alice, Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Failed, ErrorCode: "needs_reauth"})
	}
	for range 10 {
		audit.Count(vault.TokenRead{UserID: alice, Platform: "twitter", Via: vault.ViaEgress, Status: vault.Success})
	}
	// 500 ids nobody ever connected, and bob, who has no account either.
	for range 500 {
		audit.Count(vault.TokenRead{UserID: uuid.NewString(), Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Failed, ErrorCode: "not_connected"})
	}
	audit.Count(vault.TokenRead{UserID: bob, Platform: "linkedin", Via: vault.ViaTokenAPI, Status: vault.Failed, ErrorCode: "not_connected"})
	audit.Count(vault.TokenRead{UserID: bob, Platform: "linkedin", Via: vault.ViaTokenAPI, Status: vault.Failed, ErrorCode: "not_connected"})

	if err := audit.Flush(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := audit.Flush(ctx, pool); err != nil {
		t.Fatal(err)
	}

	type row struct {
		user, platform, via, status, code string
		events                            int
		details                           map[string]any
	}
	rows, err := pool.Query(ctx, `SELECT coalesce(user_id::text, ''), platform, details->>'via', status, coalesce(error_code, ''), events, details
		FROM credential_audit_log WHERE action = 'token_read' ORDER BY 1 DESC, 2, 3, 4, 5`)
	if err != nil {
		t.Fatal(err)
	}
	var got []row
	for rows.Next() {
		var r row
		var raw []byte
		if err := rows.Scan(&r.user, &r.platform, &r.via, &r.status, &r.code, &r.events, &raw); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(raw, &r.details)
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []row{
		{alice, "twitter", "egress", "success", "", 10, nil},
		{alice, "twitter", "token_api", "failed", "needs_reauth", 3, nil},
		{alice, "twitter", "token_api", "success", "", 1001, nil},
		{"", "linkedin", "token_api", "failed", "not_connected", 2, nil},
		{"", "twitter", "token_api", "failed", "not_connected", 500, nil},
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.user != w.user || g.platform != w.platform || g.via != w.via || g.status != w.status || g.code != w.code || g.events != w.events {
			t.Errorf("row %d: %+v, want %+v", i, g, w)
		}
		if g.details["window_s"] != float64(60) || g.details["first_at"] == nil || g.details["last_at"] == nil {
			t.Errorf("row %d details: %v, want window_s 60, first_at, last_at", i, g.details)
		}
	}
	if got[2].details["refreshed"] != float64(1) || got[2].details["source"] != "credentials_encrypted" {
		t.Errorf("success row details %v, want refreshed 1 and the source", got[2].details)
	}
	if got[3].details["users"] != float64(1) || got[4].details["users"] != float64(500) {
		t.Errorf("unattributed rows: users %v and %v, want 1 and 500", got[3].details["users"], got[4].details["users"])
	}
}

// A flush that fails keeps its counts: the next one writes them, once.
func TestReadAuditKeepsCountsAFailedFlushCouldNotWrite(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	audit := &vault.ReadAudit{}
	for range 7 {
		audit.Count(vault.TokenRead{UserID: bob, Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Failed, ErrorCode: "not_connected"})
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := audit.Flush(canceled, pool); err == nil {
		t.Fatal("a flush on a canceled context reported success")
	}
	audit.Count(vault.TokenRead{UserID: bob, Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Failed, ErrorCode: "not_connected"})
	if err := audit.Flush(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	var rows, events int
	if err := pool.QueryRow(context.Background(), `SELECT count(*), coalesce(sum(events), 0) FROM credential_audit_log`).Scan(&rows, &events); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || events != 8 {
		t.Errorf("%d rows with %d events, want 1 row with 8", rows, events)
	}
}

// The daily roll-up and report count the reads a row stands for, not
// the row.
func TestRollUpSumsEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	if _, err := pool.Exec(ctx, `INSERT INTO credential_audit_log (created_at, user_id, platform, action, status, events) VALUES
		($1, $2, 'twitter', 'token_read', 'success', 11580), ($1, $2, 'twitter', 'connect', 'success', 1)`, now.AddDate(0, 0, -1), alice); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.RollUpAuditDays(ctx, pool, now, time.Hour, 31); err != nil {
		t.Fatal(err)
	}
	var reads, total int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT events FROM credential_audit_daily WHERE action = 'token_read'),
		(SELECT events FROM credential_audit_rollups)`).Scan(&reads, &total); err != nil {
		t.Fatal(err)
	}
	if reads != 11580 || total != 11581 {
		t.Errorf("rolled up %d token reads of %d events, want 11580 of 11581", reads, total)
	}
}

// A window holds at most 100,000 keys: reads past that are still
// counted, without their user id (details.unattributed).
func TestReadAuditBoundsItsMemory(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	audit := &vault.ReadAudit{}
	const keys, more = 100_000, 5
	for range keys + more {
		audit.Count(vault.TokenRead{UserID: uuid.NewString(), Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Failed, ErrorCode: "not_connected"})
	}
	if err := audit.Flush(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	var rows, events, users, unattributed int
	if err := pool.QueryRow(context.Background(), `SELECT count(*), sum(events), max((details->>'users')::int), max((details->>'unattributed')::int)
		FROM credential_audit_log`).Scan(&rows, &events, &users, &unattributed); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || events != keys+more || users != keys || unattributed != more {
		t.Errorf("%d rows, %d events, %d users, %d unattributed; want 1, %d, %d, %d", rows, events, users, unattributed, keys+more, keys, more)
	}
}

// Through PgBouncer in transaction mode (pooler=transaction: every
// statement one typed round trip), the token read rows are written as on
// a direct connection, and prune and erasure pass their doors (the
// settings are transaction-local, so they hold behind such a pooler).
func TestTheAuditLifecycleWorksThroughATransactionPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct := pgtest.Database(t)
	pool, err := vault.OpenPool(ctx, pgtest.Bouncer(t, direct))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform) VALUES ($1::uuid, 'twitter')`, alice); err != nil {
		t.Fatal(err)
	}
	audit := &vault.ReadAudit{}
	for range 25 {
		audit.Count(vault.TokenRead{UserID: alice, Platform: "twitter", Via: vault.ViaTokenAPI, Status: vault.Success})
		audit.Count(vault.TokenRead{UserID: bob, Platform: "twitter", Via: vault.ViaEgress, Status: vault.Failed, ErrorCode: "not_connected"})
	}
	if err := audit.Flush(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO credential_audit_log (created_at, action, status) VALUES (now() - interval '3 days', 'connect', 'success')`); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.RollUpAuditDays(ctx, pool, time.Now(), time.Hour, 31); err != nil {
		t.Fatal(err)
	}
	var export strings.Builder
	res, err := vault.PruneAudit(ctx, pool, vault.PruneOptions{Before: time.Now().Add(-48 * time.Hour), Export: &export})
	if err != nil || res.Rows != 1 || strings.Count(export.String(), "\n") != 1 {
		t.Fatalf("prune: %+v %v\n%s", res, err, export.String())
	}
	erased, err := vault.EraseUser(ctx, pool, vault.Settings{}, alice, vault.EraseOptions{})
	if err != nil || len(erased.Accounts) != 1 || erased.AuditRows != 1 {
		t.Fatalf("erase: %+v %v", erased, err)
	}
	var named, reads int
	if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE user_id IS NOT NULL), coalesce(sum(events) FILTER (WHERE action = 'token_read'), 0)
		FROM credential_audit_log`).Scan(&named, &reads); err != nil {
		t.Fatal(err)
	}
	if named != 0 || reads != 50 {
		t.Errorf("%d rows name a user, %d token reads; want 0 and 50", named, reads)
	}
}
