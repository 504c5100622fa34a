package worker

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/vault"
)

// rollupGrace is how long after midnight (UTC) a day is taken as over.
const rollupGrace = time.Hour

// RollUp writes the daily audit counts of finished days not yet rolled
// up (up to a month per run), as a singleton.
func RollUp(ctx context.Context, db vault.DB, now time.Time) (days []time.Time, err error) {
	_, err = exclusively(ctx, db, lockRollup, false, func(tx pgx.Tx) error {
		days, err = vault.RollUpAuditDays(ctx, tx, now, rollupGrace, 31)
		return err
	})
	return days, err
}

// RollUpFinished rolls up every finished day not yet rolled up, however
// many, waiting for a roll-up running elsewhere rather than skipping:
// what a prune needs before it deletes a day's rows.
func RollUpFinished(ctx context.Context, db vault.DB, now time.Time) ([]time.Time, error) {
	const perRun = 31
	var all []time.Time
	for {
		var days []time.Time
		_, err := exclusively(ctx, db, lockRollup, true, func(tx pgx.Tx) error {
			var err error
			days, err = vault.RollUpAuditDays(ctx, tx, now, rollupGrace, perRun)
			return err
		})
		if err != nil {
			return all, err
		}
		all = append(all, days...)
		if len(days) < perRun {
			return all, nil
		}
	}
}
