package report_test

import (
	"context"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/vault"
)

// A refresh job due longer than the grace makes the queue unhealthy and
// says why; a queue the database cannot be asked about is not read.
func TestQueueHealthCallsOverdueJobsUnhealthy(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	ctx := context.Background()
	view, ok := report.QueueHealth(ctx, pool, time.Now(), true)
	if !ok || view["ok"] != true || view["overdue"] != int64(0) {
		t.Fatalf("an empty queue: %v %v", ok, view)
	}
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform) VALUES ('00000000-0000-4000-8000-000000000001', 'twitter')`)
	var id string
	if err := pool.QueryRow(ctx, `SELECT id::text FROM social_accounts`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.ScheduleRenewal(ctx, pool, id, 1, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	view, ok = report.QueueHealth(ctx, pool, time.Now(), true)
	if ok || view["ok"] != false || view["overdue"] != int64(1) || view["error"] == nil {
		t.Fatalf("a job an hour overdue: %v %v", ok, view)
	}
	if view, ok := report.QueueHealth(ctx, pool, time.Now(), false); !ok || view["ok"] != false {
		t.Errorf("with the database down: %v %v (the database check reports the outage)", ok, view)
	}
}

// The app table's preflight is read at most every AppTableEvery: a
// problem that appears in between is reported after Expire (or the
// interval), not before.
func TestAppTableHealthReadsTheCatalogAtMostEveryInterval(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	ctx := context.Background()
	var check report.AppTable
	if view, ok := check.Health(ctx, pool, false); !ok || view["ok"] != false {
		t.Fatalf("never read, database down: %v %v", ok, view)
	}
	if view, ok := check.Health(ctx, pool, true); !ok || view["ok"] != true {
		t.Fatalf("a migrated table: %v %v", ok, view)
	}
	pgtest.Exec(t, url, `ALTER TABLE social_accounts DROP COLUMN platform_user_id`)
	if _, ok := check.Health(ctx, pool, true); !ok {
		t.Fatal("read again within AppTableEvery")
	}
	check.Expire()
	view, ok := check.Health(ctx, pool, true)
	if ok || view["ok"] != false || view["problems"] == nil {
		t.Fatalf("a table without platform_user_id: %v %v", ok, view)
	}
}
