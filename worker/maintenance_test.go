package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/worker"
)

// Cleanup deletes only expired states, and concurrent runs (two
// replicas' loops and an operator's command) never count a row twice.
func TestCleanupDeletesOnlyExpiredStatesAndNeverDoubleCounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pgtest.Exec(t, e.url, `INSERT INTO oauth_states (state_hash, user_id, platform, redirect_uri, expires_at)
		SELECT sha256(i::text::bytea), gen_random_uuid(), 'twitter', 'http://x/cb',
		       CASE WHEN i <= 300 THEN now() - interval '1 minute' ELSE now() + interval '10 minutes' END
		FROM generate_series(1, 500) i`)
	var mu sync.Mutex
	var deleted int64
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			// Half wait their turn (the command), half skip when busy (the loops).
			res, err := worker.Cleanup(context.Background(), pgtest.Pool(t, e.url), time.Now(), "test", i%2 == 0)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			deleted += res.States
			mu.Unlock()
		})
	}
	wg.Wait()
	if deleted != 300 {
		t.Errorf("runs reported %d deleted in all, want 300", deleted)
	}
	if live := e.scalar(`SELECT count(*) FROM oauth_states`); live != 200 {
		t.Errorf("%d states left, want the 200 live ones", live)
	}
	if audited := e.scalar(`SELECT coalesce(sum((details->>'deleted')::int), 0) FROM credential_audit_log WHERE action = 'state_cleanup'`); audited != 300 {
		t.Errorf("audit rows account for %d deleted states, want 300", audited)
	}
	if runs := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'state_cleanup'`); runs != 1 {
		t.Errorf("%d state_cleanup rows, want 1: runs that deleted nothing write none", runs)
	}
}

// The roll-up writes finished days once, and the daily report reads the
// same counts from it as from the raw log.
func TestRollUpCountsFinishedDaysOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	pgtest.Exec(t, e.url, `INSERT INTO credential_audit_log (created_at, action, status, platform, flow, duration_ms)
		SELECT $1::timestamptz - (i % 3) * interval '1 day' - interval '1 hour',
		       CASE WHEN i % 2 = 0 THEN 'connect' ELSE 'refresh' END,
		       CASE WHEN i % 5 = 0 THEN 'failed' ELSE 'success' END, 'twitter', 'new', 100
		FROM generate_series(1, 300) i`, now)
	days, err := worker.RollUp(context.Background(), e.pool, now)
	if err != nil || len(days) != 2 {
		t.Fatalf("rolled up %v (%v), want the 2 finished days (today is not over)", days, err)
	}
	again, err := worker.RollUp(context.Background(), e.pool, now)
	if err != nil || len(again) != 0 {
		t.Fatalf("second run rolled up %v (%v), want nothing", again, err)
	}
	if rolled := e.scalar(`SELECT sum(events) FROM credential_audit_daily`); rolled != 200 {
		t.Errorf("roll-up holds %d events, want the 200 of the two finished days", rolled)
	}
	daily, err := report.Daily(context.Background(), e.pool, now, 7)
	if err != nil {
		t.Fatal(err)
	}
	var total, partial int64
	for _, d := range daily {
		total += d.Events
		if d.Partial {
			partial += d.Events
		}
	}
	if total != 300 || partial != 100 {
		t.Errorf("daily report: %d events, %d of them counted live; want 300 and today's 100", total, partial)
	}
}
