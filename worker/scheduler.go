package worker

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/vault"
)

// scheduleBatch bounds one scheduler pass, so the first pass after a
// large backfill does not hold its lock for long; the next pass goes on.
const scheduleBatch = 5000

// ScheduleUnscheduled queues accounts with live credentials and no job
// for their current credentials (legacy rows that backfill sealed, rows
// from before migration 002), as a singleton. Connects and renewals
// schedule their own next job; this catches the rest. The worker that
// takes each job decides, with the Policy, when it is really due.
func ScheduleUnscheduled(ctx context.Context, db vault.DB, now time.Time) (queued int64, err error) {
	_, err = exclusively(ctx, db, lockSchedule, false, func(tx pgx.Tx) error {
		queued, err = vault.ScheduleUnscheduled(ctx, tx, now, scheduleBatch)
		return err
	})
	return queued, err
}
