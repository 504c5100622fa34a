package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/credgate/credgate/oauth"
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

// queue is the refresh queue as this worker holds it: its claims and
// finishes under its name.
func (w *Workers) queue() vault.RefreshQueue { return vault.RefreshQueue{Worker: w.Name} }

// defaults fills unset fields once, before any goroutine reads them.
func (w *Workers) defaults() { w.once.Do(w.setDefaults) }

func (w *Workers) setDefaults() {
	if w.N <= 0 {
		w.N = DefaultWorkers
	}
	if w.Lease <= 0 {
		w.Lease = DefaultLease
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
			batch, err = w.queue().Claim(ctx, w.Refresher.DB, w.N, w.Lease, w.Refresher.now())
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
			w.Refresher.logger().Warn("refresh job failed; it will be retried",
				zap.Int64("job", j.ID), zap.Error(err))
		}
		return
	}
	if w.OnResult != nil {
		w.OnResult(platform, res)
	}
}

// RunJob runs one claimed job: take the account's renewal lease, lock the
// account, decide with the policy, renew when due, and record the outcome
// and the job's end in the same transaction. An error means nothing was
// committed and nothing is pending: the job is released to run again
// shortly (or, if even that fails, its claim runs out). A platform answer
// whose store failed is not an error: storeAnswer stores it.
func (w *Workers) RunJob(ctx context.Context, j vault.Job) (platform string, res JobResult, err error) {
	w.defaults()
	rn, taken, left, err := w.Refresher.takeLease(ctx, j.AccountID)
	if err != nil {
		w.release(j)
		return "", "", fmt.Errorf("refresh job %d: %w", j.ID, err)
	}
	if !taken {
		// Another renewal of the account is in flight (a token API read,
		// or a store being retried after a fault): look again soon (a
		// stored renewal ends the lease early), at the latest when it
		// runs out.
		ctx, cancel := context.WithTimeout(ctx, renewalWriteBudget)
		defer cancel()
		at := w.Refresher.now().Add(min(left, 10*time.Second) + time.Second)
		if err := w.finish(w.queue().Reschedule(ctx, w.Refresher.DB, j, j.Version, at)); err != nil {
			return "", "", fmt.Errorf("refresh job %d: %w", j.ID, err)
		}
		return "", ResultWaiting, nil
	}
	var attempted bool
	var attempt error
	var end func(bool, error, error)
	err = w.Refresher.inRenewalTx(ctx, func(txCtx context.Context, tx pgx.Tx) error {
		locked, lockErr := w.Refresher.Accounts.LockForRenewal(txCtx, tx, j.AccountID)
		platform = locked.Account.Platform
		var err error
		res, err = w.runLocked(ctx, txCtx, tx, j, locked, lockErr, func(ctx context.Context) (context.Context, func(error)) {
			ctx, end = w.Refresher.refreshSpan(ctx, platform, "refresh_worker")
			return ctx, func(rerr error) { attempted, attempt = true, rerr }
		}, rn)
		return err
	})
	if end != nil {
		end(attempted, attempt, err)
	}
	w.Refresher.settle(rn, err)
	if err != nil {
		if rn.answered != nil {
			// storeAnswer stores it with the job's next step.
			return platform, ResultRefreshed, nil
		}
		// Nothing reached the platform, or it answered with an error
		// that was not recorded: the job can run again at once rather
		// than wait out its claim.
		w.release(j)
		return platform, "", fmt.Errorf("refresh job %d: %w", j.ID, err)
	}
	return platform, res, nil
}

// release ends a claim whose run failed before it could record anything,
// so the job is due again at once (best effort: otherwise its claim runs
// out).
func (w *Workers) release(j vault.Job) {
	ctx, cancel := context.WithTimeout(context.Background(), renewalWriteBudget)
	defer cancel()
	// A short pause, not the claim's whole lease: the fault is usually
	// gone in seconds, and MaxAttempts still bounds a job that never runs.
	if err := w.finish(w.queue().Release(ctx, w.Refresher.DB, j, w.Refresher.now().Add(10*time.Second))); err != nil {
		w.Refresher.logger().Debug("releasing a refresh job failed; its claim runs out by itself", zap.Error(err))
	}
}

// runLocked decides and does the job's work on the locked account.
// startRenewal starts a renewal's span and returns its context and a
// function that records the attempt's outcome.
type startRenewal func(ctx context.Context) (context.Context, func(error))

func (w *Workers) runLocked(ctx, txCtx context.Context, tx pgx.Tx, j vault.Job, locked vault.Renewable, lockErr error, start startRenewal, rn *renewal) (JobResult, error) {
	r, q := w.Refresher, w.queue()
	a, c := locked.Account, locked.Credentials
	live := a.Status == vault.StatusConnected || a.Status == vault.StatusExpiring
	switch {
	case errors.Is(lockErr, vault.ErrNotConnected) || (lockErr == nil && !live):
		return ResultSkipped, w.finish(q.Complete(txCtx, tx, j))
	case vault.Undecryptable(lockErr) && a.ID != "":
		// No retry fixes that, a key does.
		if r.DecryptFailed != nil {
			r.DecryptFailed(a.Platform)
		}
		return ResultDead, w.kill(txCtx, tx, j, a, vault.ActionDecryptFailed, "decrypt_failed")
	case lockErr != nil:
		return "", lockErr
	case j.Attempts > w.Backoff.Limit():
		// Claimed again and again without ever finishing (each claim's
		// lease ran out): stop before it loops for ever.
		return ResultDead, w.kill(txCtx, tx, j, a, vault.ActionRefresh, "too_many_attempts")
	}
	p, ok := r.Providers[a.Platform]
	if !ok {
		// A platform removed from the config: nothing can renew it.
		return ResultSkipped, w.finish(q.Kill(txCtx, tx, j, "unknown_platform"))
	}
	if a.AppOwned && !locked.Settings.AppRefreshOff {
		// The settings were read through a cache that may be a moment
		// old, and the scheduler queued this job from the table's own:
		// ask the table before leaving the job to the app, or a job
		// queued just after app-refresh went off would be left, and
		// queued again.
		now, err := vault.LoadSettings(txCtx, tx)
		if err != nil {
			return "", err
		}
		locked.Settings = now
	}
	if a.AppOwned && !locked.Settings.AppRefreshOff {
		// The app's token, and the app still renews it: no renewal, and
		// no expiring or needs_reauth mark either (the app decides).
		return ResultSkipped, w.finish(q.LeaveToApp(txCtx, tx, j))
	}
	switch plan := r.Policy.Next(RenewalOf(p), a, c, r.now()); plan.Step {
	case StepIdle:
		return ResultSkipped, w.finish(q.Complete(txCtx, tx, j))
	case StepWait:
		return ResultWaiting, w.reschedule(txCtx, tx, j, a, plan.At)
	case StepMarkExpiring:
		if err := r.Accounts.MarkExpiring(txCtx, tx, a, plan.At); err != nil {
			return "", err
		}
		if err := vault.AppendAudit(txCtx, tx, vault.Event{UserID: a.UserID, Platform: a.Platform,
			Action: vault.ActionExpiring, Status: vault.Success,
			Details: map[string]any{"account_id": a.ID, "expires_at": plan.At.UTC().Format(time.RFC3339)}}); err != nil {
			return "", err
		}
		return ResultExpiring, w.reschedule(txCtx, tx, j, a, plan.At)
	case StepNeedsReauth:
		if err := r.markNeedsReauth(txCtx, tx, a, nil, nil); err != nil {
			return "", err
		}
		return ResultNeedsReauth, w.finish(q.Complete(txCtx, tx, j))
	}
	ctx, attempted := start(ctx)
	// The failure's audit rows carry the renewal's trace too.
	txCtx = trace.ContextWithSpan(txCtx, trace.SpanFromContext(ctx))
	res, rerr, err := w.renewJob(ctx, txCtx, tx, j, p, locked, rn)
	attempted(rerr)
	return res, err
}

// renewJob renews a due token and ends the claim: the job becomes the
// account's next look, or is retried with backoff, or dies.
func (w *Workers) renewJob(ctx, txCtx context.Context, tx pgx.Tx, j vault.Job, p *oauth.Provider, locked vault.Renewable, rn *renewal) (res JobResult, rerr, err error) {
	r, q, a := w.Refresher, w.queue(), locked.Account
	// A lost lease does not stop the renewal from being saved: the
	// platform has already rotated the token. The other claimant finds it
	// fresh once it gets the row lock, and ends the job itself.
	_, _, rerr = r.renew(ctx, txCtx, tx, p, locked, "refresh_worker", j.Attempts, func(b *pgx.Batch, na vault.Account, nc vault.Credentials) {
		if at, ok := r.nextLook(p, na, nc); ok {
			q.QueueReschedule(b, j, na.Version, at)
		} else {
			q.QueueComplete(b, j)
		}
	}, rn)
	switch outcomeOf(rerr) {
	case renewalDone:
		return ResultRefreshed, nil, nil
	case renewalAborted:
		return "", nil, rerr
	case renewalNeedsUser:
		if err := r.markNeedsReauth(txCtx, tx, a, rerr, rn); err != nil {
			return "", rerr, err
		}
		return ResultNeedsReauth, rerr, w.finish(q.Kill(txCtx, tx, j, errorCode(rerr)))
	}
	dead, ferr := q.Fail(txCtx, tx, j, errorCode(rerr), w.Backoff, r.now())
	if err := r.auditFailure(txCtx, tx, a, rerr, "refresh_worker", map[string]any{"attempt": j.Attempts, "dead": dead}); err != nil {
		return "", rerr, err
	}
	if dead {
		if ferr == nil {
			ferr = w.announceGaveUp(txCtx, tx, a, errorCode(rerr), j.Attempts)
		}
		return ResultDead, rerr, w.finish(ferr)
	}
	return ResultRetry, rerr, w.finish(ferr)
}

// kill ends a job for good with a failed audit row saying why.
func (w *Workers) kill(ctx context.Context, tx pgx.Tx, j vault.Job, a vault.Account, action vault.Action, code string) error {
	if err := vault.AppendAudit(ctx, tx, vault.Event{UserID: a.UserID, Platform: a.Platform, Action: action,
		Status: vault.Failed, ErrorCode: code,
		Details: map[string]any{"account_id": a.ID, "trigger": "refresh_worker", "attempt": j.Attempts, "dead": true}}); err != nil {
		return err
	}
	if err := w.queue().Kill(ctx, tx, j, code); err != nil {
		return w.finish(err)
	}
	return w.announceGaveUp(ctx, tx, a, code, j.Attempts)
}

// announceGaveUp tells the app's webhook that a's renewals stopped for a
// reason that is not the user's (account.refresh_failed), in the
// transaction that ends the job.
func (w *Workers) announceGaveUp(ctx context.Context, tx pgx.Tx, a vault.Account, code string, attempts int) error {
	return w.Refresher.Accounts.Announce(ctx, tx, vault.AccountEvent{Kind: vault.EventRefreshFailed,
		AccountID: a.ID, UserID: a.UserID, Platform: a.Platform,
		Data: map[string]any{"reason": code, "attempts": attempts}})
}

// reschedule ends this claim by making the job the account's next look.
func (w *Workers) reschedule(ctx context.Context, tx pgx.Tx, j vault.Job, a vault.Account, at time.Time) error {
	return w.finish(w.queue().Reschedule(ctx, tx, j, a.Version, at))
}

// finish tolerates a lost lease: the account row lock, not the job,
// serialises renewals, so the job's status is bookkeeping that the
// claimant now holding it will write.
func (w *Workers) finish(err error) error {
	if errors.Is(err, vault.ErrLeaseLost) {
		w.Refresher.logger().Info("refresh job lease was lost; the new claimant finishes it")
		return nil
	}
	return err
}
