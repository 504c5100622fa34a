package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/credgate/credgate/vault"
)

// JobResult is what a worker did with one job, for logs, tests and
// metrics.
type JobResult string

// The results.
const (
	ResultRefreshed   JobResult = "refreshed"
	ResultWaiting     JobResult = "rescheduled" // not due yet: moved to its due time
	ResultExpiring    JobResult = "expiring"
	ResultNeedsReauth JobResult = "needs_reauth"
	ResultRetry       JobResult = "retry"
	ResultDead        JobResult = "dead"
	ResultSkipped     JobResult = "skipped" // disconnected, no blob, or nothing will come due
)

// Workers claim refresh jobs and run them.
type Workers struct {
	Refresher *Refresher
	// N is how many jobs run at once. Default 4.
	N int
	// Name identifies this process in locked_by; make it unique per
	// replica (host/pid plus a random suffix).
	Name string
	// Lease is how long a claimed job is this worker's before another
	// may take it over. It must outlast one renewal. Default 2m.
	Lease time.Duration
	// Poll is how long an idle worker waits before looking again.
	// Default 1s.
	Poll time.Duration
	// Backoff is the retry policy; MaxAttempts marks a job dead.
	Backoff vault.Backoff
	// Ready gates claiming (the database must be reachable and the keys
	// verified); default always ready.
	Ready func() bool
	// OnResult, if set, sees every finished job.
	OnResult func(platform string, r JobResult)

	once sync.Once
}

// defaults fills unset fields once, before any goroutine reads them.
func (w *Workers) defaults() { w.once.Do(w.setDefaults) }

func (w *Workers) setDefaults() {
	if w.N <= 0 {
		w.N = 4
	}
	if w.Lease <= 0 {
		w.Lease = 2 * time.Minute
	}
	if w.Poll <= 0 {
		w.Poll = time.Second
	}
	if w.Ready == nil {
		w.Ready = func() bool { return true }
	}
}

// Run claims and runs jobs until ctx is done. Jobs already claimed run
// on jobCtx, which the caller cancels only after a grace period, so a
// stop does not abandon a renewal half-way through.
func (w *Workers) Run(ctx, jobCtx context.Context) {
	w.defaults()
	log := w.Refresher.logger()
	jobs := make(chan vault.Job)
	var wg sync.WaitGroup
	for range w.N {
		wg.Go(func() {
			for j := range jobs {
				w.runSafely(jobCtx, j)
			}
		})
	}
	defer wg.Wait()
	defer close(jobs)
	failures := 0
	for {
		if ctx.Err() != nil {
			return
		}
		var batch []vault.Job
		var err error
		if w.Ready() {
			batch, err = vault.RefreshQueue{}.Claim(ctx, w.Refresher.DB, w.Name, w.N, w.Lease, w.Refresher.now())
		}
		if err != nil && ctx.Err() == nil {
			failures++
			if failures == 1 || failures%30 == 0 {
				log.Warn("claiming refresh jobs failed; retrying", zap.Error(err), zap.Int("failures", failures))
			}
		} else if err == nil && failures > 0 {
			log.Info("claiming refresh jobs works again", zap.Int("after_failures", failures))
			failures = 0
		}
		if len(batch) == 0 {
			wait := w.Poll
			if failures > 0 {
				wait = min(w.Poll<<min(failures, 5), 30*time.Second)
			}
			// Jitter, so replicas that started together do not poll together.
			wait += rand.N(wait/5 + 1)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		for _, j := range batch {
			select {
			case jobs <- j:
			case <-ctx.Done():
				// Unstarted jobs keep their lease and are reclaimed when
				// it runs out.
				return
			}
		}
	}
}

func (w *Workers) runSafely(ctx context.Context, j vault.Job) {
	defer func() {
		if p := recover(); p != nil {
			w.Refresher.logger().Error("refresh job panicked; its lease will expire and it will be retried",
				zap.Int64("job", j.ID), zap.Any("panic", p))
		}
	}()
	platform, res, err := w.RunJob(ctx, j)
	if err != nil {
		if ctx.Err() == nil {
			w.Refresher.logger().Warn("refresh job failed; its lease will expire and it will be retried",
				zap.Int64("job", j.ID), zap.Error(err))
		}
		return
	}
	if w.OnResult != nil {
		w.OnResult(platform, res)
	}
}

// RunJob runs one claimed job: lock the account, decide with the policy,
// renew when due, and record the outcome and the job's end in the same
// transaction. An error means nothing was committed; the job's lease
// will run out and another claim will retry it.
func (w *Workers) RunJob(ctx context.Context, j vault.Job) (platform string, res JobResult, err error) {
	w.defaults()
	r := w.Refresher
	q := vault.RefreshQueue{}
	err = vault.InTx(ctx, r.DB, func(tx pgx.Tx) error {
		a, c, err := r.Accounts.GetByIDForUpdate(ctx, tx, j.AccountID)
		platform = a.Platform
		if errors.Is(err, vault.ErrNotConnected) || (err == nil && a.Status != vault.StatusConnected && a.Status != vault.StatusExpiring) {
			res = ResultSkipped
			return w.finish(ctx, tx, q.Complete(ctx, tx, j, w.Name))
		}
		if err != nil {
			if ctx.Err() != nil || a.ID == "" {
				return err
			}
			// The blob does not open: no retry fixes that, a key does.
			res = ResultDead
			if aerr := (vault.Audit{}).Append(ctx, tx, vault.Event{UserID: a.UserID, Platform: a.Platform,
				Action: vault.ActionDecryptFailed, Status: vault.Failed, ErrorCode: "decrypt_failed",
				Details: map[string]any{"account_id": a.ID, "trigger": "refresh_worker"}}); aerr != nil {
				return aerr
			}
			return w.finish(ctx, tx, q.Kill(ctx, tx, j, w.Name, "decrypt_failed"))
		}
		p, ok := r.Providers[a.Platform]
		if !ok {
			// A platform removed from the config: nothing can renew it.
			res = ResultSkipped
			return w.finish(ctx, tx, q.Kill(ctx, tx, j, w.Name, "unknown_platform"))
		}
		plan := r.Policy.Next(RenewalOf(p), a, c, r.now())
		switch plan.Step {
		case StepIdle:
			res = ResultSkipped
			return w.finish(ctx, tx, q.Complete(ctx, tx, j, w.Name))
		case StepWait:
			res = ResultWaiting
			return w.reschedule(ctx, tx, j, a, plan.At)
		case StepMarkExpiring:
			res = ResultExpiring
			if err := r.Accounts.MarkStatus(ctx, tx, a.ID, vault.StatusExpiring); err != nil {
				return err
			}
			if err := (vault.Audit{}).Append(ctx, tx, vault.Event{UserID: a.UserID, Platform: a.Platform,
				Action: vault.ActionExpiring, Status: vault.Success,
				Details: map[string]any{"account_id": a.ID, "expires_at": plan.At.UTC().Format(time.RFC3339)}}); err != nil {
				return err
			}
			return w.reschedule(ctx, tx, j, a, plan.At)
		case StepNeedsReauth:
			res = ResultNeedsReauth
			if err := r.markNeedsReauth(ctx, tx, a, nil); err != nil {
				return err
			}
			return w.finish(ctx, tx, q.Complete(ctx, tx, j, w.Name))
		}
		// A lost lease does not stop the renewal from being saved: the
		// platform has already rotated the token. The other claimant finds
		// it fresh once it gets the row lock, and ends the job itself.
		_, _, rerr := r.renew(ctx, tx, p, a, c, "refresh_worker", j.Attempts, func(b *pgx.Batch, na vault.Account, nc vault.Credentials) {
			if at, ok := r.nextLook(p, na, nc); ok {
				q.QueueReschedule(b, j, w.Name, na.Version, at)
			} else {
				q.QueueComplete(b, j, w.Name)
			}
		})
		switch {
		case rerr == nil:
			res = ResultRefreshed
			return nil
		case ctx.Err() != nil:
			return rerr
		case needsUser(rerr):
			res = ResultNeedsReauth
			if err := r.markNeedsReauth(ctx, tx, a, rerr); err != nil {
				return err
			}
			return w.finish(ctx, tx, q.Kill(ctx, tx, j, w.Name, errorCode(rerr)))
		}
		dead, ferr := q.Fail(ctx, tx, j, w.Name, errorCode(rerr), w.Backoff, r.now())
		res = ResultRetry
		if dead {
			res = ResultDead
		}
		if err := r.auditFailure(ctx, tx, a, rerr, "refresh_worker", map[string]any{"attempt": j.Attempts, "dead": dead}); err != nil {
			return err
		}
		return w.finish(ctx, tx, ferr)
	})
	if err != nil {
		return platform, "", fmt.Errorf("refresh job %d: %w", j.ID, err)
	}
	return platform, res, nil
}

// reschedule ends this claim by making the job the account's next look.
func (w *Workers) reschedule(ctx context.Context, tx pgx.Tx, j vault.Job, a vault.Account, at time.Time) error {
	return w.finish(ctx, tx, (vault.RefreshQueue{}).Reschedule(ctx, tx, j, w.Name, a.Version, at))
}

// finish tolerates a lost lease: the account row lock, not the job,
// serialises renewals, so the job's status is bookkeeping that the
// claimant now holding it will write.
func (w *Workers) finish(_ context.Context, _ pgx.Tx, err error) error {
	if errors.Is(err, vault.ErrLeaseLost) {
		w.Refresher.logger().Info("refresh job lease was lost; the new claimant finishes it")
		return nil
	}
	return err
}
