package worker

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/vault"
)

// finishedJobRetention is how long done refresh jobs are kept. They only
// serve as "this token was already handled" for the scheduler; an
// account whose job was pruned is looked at once more, harmlessly.
const finishedJobRetention = 7 * 24 * time.Hour

// CleanupResult is what one cleanup run did.
type CleanupResult struct {
	// Ran is false when another replica held the lock (background runs
	// only).
	Ran bool
	// States is how many expired OAuth states were deleted.
	States int64
	// Jobs is how many finished refresh jobs were pruned.
	Jobs int64
}

// Cleanup deletes expired OAuth states (the guide's Step 5.2 and daily
// task) and prunes finished refresh jobs, as a singleton: of concurrent
// runs, one deletes and the others find nothing (wait) or skip (no
// wait), so no row is counted twice. A run that deleted states writes
// one state_cleanup audit row; trigger says who asked ("schedule",
// "api", "command").
func Cleanup(ctx context.Context, db vault.DB, now time.Time, trigger string, wait bool) (CleanupResult, error) {
	var res CleanupResult
	states := vault.NewStates(nil)
	ran, err := exclusively(ctx, db, lockCleanup, wait, func(tx pgx.Tx) error {
		var err error
		if res.States, err = states.CleanupExpired(ctx, tx); err != nil {
			return err
		}
		if res.Jobs, err = vault.PruneFinishedJobs(ctx, tx, now.Add(-finishedJobRetention)); err != nil {
			return err
		}
		// The app's flows whose callback never came (abandoned at the
		// consent screen): they count nowhere.
		if _, err = vault.CleanupLegacyFlows(ctx, tx); err != nil {
			return err
		}
		if res.States == 0 {
			return nil
		}
		return vault.AppendAudit(ctx, tx, vault.Event{Action: vault.ActionStateCleanup, Status: vault.Success,
			Details: map[string]any{"deleted": res.States, "trigger": trigger}})
	})
	res.Ran = ran
	return res, err
}
