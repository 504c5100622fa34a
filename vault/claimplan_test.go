package vault_test

import (
	"context"
	"strings"
	"testing"

	"github.com/credgate/credgate/vault"
)

// A pooled connection runs the claim as a prepared statement, and after a
// few runs PostgreSQL may keep its generic plan, planned without knowing
// LIMIT $2. That plan must still find the claimed jobs by index: a plan
// that scans the queue (its history included) made every claim cost as
// much as the whole table, and the claims most of a renewal's database
// work.
func TestTheClaimReadsByIndexInItsGenericPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	for _, q := range []string{
		`INSERT INTO social_accounts (user_id, platform) SELECT gen_random_uuid(), 'twitter' FROM generate_series(1, 2000)`,
		// Each account's finished job and its next, due one.
		`INSERT INTO token_refresh_queue (social_account_id, run_at, status) SELECT id, now() - interval '1 day', 'done' FROM social_accounts`,
		`INSERT INTO token_refresh_queue (social_account_id, run_at, status) SELECT id, now() - random() * interval '1 minute', 'pending' FROM social_accounts`,
		`ANALYZE social_accounts, token_refresh_queue`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, q := range []string{
		`SET plan_cache_mode = force_generic_plan`,
		`PREPARE claim (text, integer, interval, timestamptz) AS ` + vault.ClaimSQL,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	defer conn.Exec(ctx, `DEALLOCATE claim; RESET plan_cache_mode`)
	rows, err := conn.Query(ctx, `EXPLAIN (COSTS OFF) EXECUTE claim ('w', 4, '1 minute', now())`)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "Seq Scan") || !strings.Contains(text, "token_refresh_queue_due_idx") {
		t.Errorf("the claim's generic plan scans the queue rather than reading it by index:\n%s", text)
	}
	// And the index scan stops at the first job not yet due: otherwise a
	// claim that finds fewer than n (every idle poll) reads every open job.
	if !strings.Contains(text, "Index Cond: (run_at <= $4)") {
		t.Errorf("the claim's scan of the due index is not bounded by run_at:\n%s", text)
	}
}
