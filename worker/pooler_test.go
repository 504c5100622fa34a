package worker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Two replicas' refresh workers, each on its own pool through PgBouncer in
// transaction mode, renew every account exactly once per cycle: the
// claims (FOR UPDATE SKIP LOCKED), the renewal leases, the row locks and
// the scheduler's transaction-level advisory lock all hold through the
// pooler, which keeps no session between transactions.
func TestReplicasRefreshThroughATransactionPooler(t *testing.T) {
	t.Parallel()
	const n = 200
	e := newEnv(t)
	e.connectMany("twitter", n)
	through := pgtest.Bouncer(t, e.url)
	var done [2]atomic.Int64
	for i, name := range []string{"replica-a", "replica-b"} {
		pool, err := vault.OpenPool(context.Background(), through)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		w := e.workers(name, pool, nil)
		w.OnResult = func(_ string, r worker.JobResult) {
			if r == worker.ResultRefreshed {
				done[i].Add(1)
			}
		}
		run(t, w)
		if _, err := worker.ScheduleUnscheduled(context.Background(), pool, e.clock.Now()); err != nil {
			t.Fatalf("the scheduler through the pooler: %v", err)
		}
	}
	e.clock.Advance(110 * time.Minute)
	waitFor(t, 2*time.Minute, "the refresh queue to drain", e.settled)
	st := e.sandbox.Stats()["twitter"]
	if st.Refreshes != n || st.RefreshReuse != 0 {
		t.Fatalf("the platform saw %d refreshes and %d reused refresh tokens, want %d and 0", st.Refreshes, st.RefreshReuse, n)
	}
	if failed := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'failed'`); failed != 0 {
		t.Fatalf("%d failed refreshes", failed)
	}
	awaitReports(func() int64 { return done[0].Load() + done[1].Load() }, n)
	if a, b := done[0].Load(), done[1].Load(); a+b != n {
		t.Fatalf("replica a refreshed %d, b %d; want %d in all", a, b, n)
	}
}
