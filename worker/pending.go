package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/credgate/credgate/internal/waitgroup"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
)

// A platform's answer is kept until it is stored.
//
// Renewing a token has an external side effect: the platform has issued
// a new token and, for Twitter/X, retired the refresh token it was asked
// with. If the transaction that stores the answer then fails (the
// database restarts, the path to it breaks, a commit times out), the
// answer must not be dropped: a later renewal with the old refresh token
// makes X revoke the whole grant. So:
//
//  1. Before calling the platform, a renewal takes the account's lease
//     (renewal_leases) in a statement of its own, committed at once: it
//     outlives the renewal's transaction and its row lock. While it is
//     live, every other renewal of the account, in any process, leaves the
//     platform alone.
//  2. The renewal stores the answer and deletes the lease in one
//     transaction, as before.
//  3. If that transaction fails after the platform answered, the answer
//     goes to storeAnswer, which retries the store on fresh connections
//     with backoff for StoreRetry (default 5 minutes: a failover), under
//     the same version check. A commit that landed although the client
//     saw an error is recognised (the stored token is the answer's).
//
// What remains: a process killed (or stopped past its grace) between the
// platform's answer and the store's commit loses the answer, and its
// lease runs out after leaseFor; the next renewal then uses the old
// refresh token. docs/background.md names this window.

// ErrRenewalPending: another process is renewing the account (or storing
// its renewal) and its token has expired meanwhile: retry in a moment.
var ErrRenewalPending = errors.New("a renewal of this account is in flight")

// errSuperseded: the account changed in a way the pending answer did not
// make; storing it would overwrite someone else's token.
var errSuperseded = errors.New("the account changed since the renewal read it")

// defaultStoreRetry is how long an answer's store is retried.
const defaultStoreRetry = 5 * time.Minute

func (r *Refresher) storeRetry() time.Duration {
	if r.StoreRetry <= 0 {
		return defaultStoreRetry
	}
	return r.StoreRetry
}

// leaseFor is how long a renewal's lease lasts: the platform call, the
// store, the store's retries and a margin.
func (r *Refresher) leaseFor() time.Duration {
	return r.providerTimeout() + renewalWriteBudget + r.storeRetry() + 30*time.Second
}

// renewal is one renewal's lease and, once the platform has answered, the
// answer not yet known to be stored.
type renewal struct {
	lease    vault.RenewalLease
	answered *answer
	// tookOver: the lease replaced one that ran out unreleased (a
	// renewal that never finished; its answer may be lost). Audits of
	// this renewal's outcome say so.
	tookOver bool
	// done is closed when the renewal's transaction is over (settle):
	// this process's callers waiting for it look again then.
	done chan struct{}
}

// answer is what storeAnswer needs to store a platform's answer again.
type answer struct {
	p       *oauth.Provider
	locked  vault.Renewable // as read under the lock before the platform call
	creds   vault.Credentials
	scopes  []string
	trigger string
	attempt int
	started time.Time
	// next queues what goes with the store (the account's next job).
	next func(b *pgx.Batch, na vault.Account, nc vault.Credentials)
}

var leaseSeq atomic.Uint64

// processID names this process in lease owners: host, pid, and a random
// part so that a restarted process with the same pid is another owner.
var processID = func() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}()

// takeLease takes accountID's lease for one renewal. taken is false, with
// how long the other lease still runs, when another renewal holds it; a
// renewal of this process that holds it, or is taking it, counts as
// holding it (left is then 0), so that no two renewals of one process
// race for the lease and the one that loses finds it unmarked.
func (r *Refresher) takeLease(ctx context.Context, accountID string) (rn *renewal, taken bool, left time.Duration, err error) {
	done := make(chan struct{})
	if _, busy := r.local.LoadOrStore(accountID, done); busy {
		return nil, false, 0, nil
	}
	lease := vault.RenewalLease{AccountID: accountID, Owner: fmt.Sprintf("%s/%d", processID, leaseSeq.Add(1))}
	ctx, cancel := context.WithTimeout(ctx, renewalWriteBudget)
	defer cancel()
	taken, left, tookOver, err := vault.TakeRenewalLease(ctx, r.DB, accountID, lease.Owner, r.leaseFor())
	if err != nil || !taken {
		r.local.CompareAndDelete(accountID, done)
		close(done)
	}
	if err != nil {
		// The insert may have committed although its answer was lost
		// (the path broke on the way back): release what may be there,
		// or the account would wait out the whole lease.
		r.releaseLater(lease)
		return nil, false, 0, err
	}
	if !taken {
		return nil, false, left, nil
	}
	if tookOver {
		r.logger().Warn("renewing an account whose previous renewal never finished (its process stopped); if the platform refuses the refresh token now, its answer was lost",
			zap.String("account_id", accountID))
	}
	return &renewal{lease: lease, tookOver: tookOver, done: done}, true, 0, nil
}

// awaitLocal waits for the renewal of account id that this process has in
// flight, if any, for at most as long as a renewal's own budget.
func (r *Refresher) awaitLocal(id string) {
	v, ok := r.local.Load(id)
	if !ok {
		return
	}
	t := time.NewTimer(r.providerTimeout() + renewalWriteBudget)
	defer t.Stop()
	select {
	case <-v.(chan struct{}):
	case <-t.C:
	}
}

// settle ends a renewal after its transaction: with an answer the
// transaction may not have stored, the store is retried in the
// background (Wait waits for it); otherwise the lease is released (best
// effort: it runs out anyway).
func (r *Refresher) settle(rn *renewal, txErr error) {
	// Waiters look at what the transaction stored; a store still being
	// retried holds the lease, and they answer as for another process's.
	r.local.CompareAndDelete(rn.lease.AccountID, rn.done)
	close(rn.done)
	if txErr != nil && rn.answered != nil {
		r.logger().Warn("storing a renewed token failed after the platform answered; retrying on a fresh connection",
			zap.String("platform", rn.answered.p.Name()), zap.String("account_id", rn.lease.AccountID), zap.Error(txErr))
		r.pending.Go(func() { r.storeAnswer(rn, txErr) })
		return
	}
	if txErr == nil && rn.answered != nil {
		return // released in the transaction that stored it
	}
	r.releaseSoon(rn.lease)
}

// releaseSoon releases l now, or in the background once the database is
// back.
func (r *Refresher) releaseSoon(l vault.RenewalLease) {
	if !r.release(l) {
		r.releaseLater(l)
	}
}

// releaseLater keeps trying to release l while the database is away, so
// that the account is not kept from renewal for the lease's whole length
// once it is back. Nothing depends on it (the lease runs out anyway), and
// the owner is this renewal's alone, so a late release removes nothing
// else.
func (r *Refresher) releaseLater(l vault.RenewalLease) {
	go func() {
		deadline := time.Now().Add(r.leaseFor())
		for wait := time.Second; time.Now().Before(deadline); wait = min(wait*2, 10*time.Second) {
			time.Sleep(wait)
			if r.release(l) {
				return
			}
		}
	}()
}

// release deletes a lease, reporting whether it could.
func (r *Refresher) release(l vault.RenewalLease) bool {
	ctx, cancel := context.WithTimeout(context.Background(), renewalWriteBudget)
	defer cancel()
	if err := l.Release(ctx, r.DB); err != nil {
		r.logger().Debug("releasing a renewal lease failed; retrying", zap.Error(err))
		return false
	}
	return true
}

// Wait waits up to grace for the stores still being retried (a stopping
// instance gives them its grace period).
func (r *Refresher) Wait(grace time.Duration) bool { return waitgroup.Within(&r.pending, grace) }

// storeAnswer retries storing rn's answer until it is stored, superseded,
// or StoreRetry has passed.
func (r *Refresher) storeAnswer(rn *renewal, cause error) {
	ans := rn.answered
	deadline := time.Now().Add(r.storeRetry())
	log := r.logger().With(zap.String("platform", ans.p.Name()), zap.String("account_id", rn.lease.AccountID))
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), renewalWriteBudget)
		if attempt == 1 {
			// Best effort: the lease was taken long enough already.
			_ = rn.lease.MarkAnswered(ctx, r.DB, r.leaseFor())
		}
		err := r.storeOnce(ctx, rn, attempt)
		cancel()
		switch {
		case err == nil:
			log.Info("renewed token stored after a failed first store", zap.Int("attempts", attempt))
			r.observe(ans.p.Name(), nil) // the renewal's outcome, counted now that it holds
			return
		case errors.Is(err, errSuperseded):
			log.Error("a renewed token was not stored: the account changed meanwhile", zap.Error(err))
			r.auditStoreFailed(rn, err)
			r.releaseSoon(rn.lease)
			return
		case time.Now().After(deadline):
			log.Error("a renewed token could not be stored before its retries ran out; the grant may be lost",
				zap.Int("attempts", attempt), zap.NamedError("first_error", cause), zap.Error(err))
			r.auditStoreFailed(rn, err)
			return
		}
		time.Sleep(wait)
		wait = min(wait*2, 5*time.Second)
	}
}

// storeOnce stores the answer under the account's row lock, with the same
// version check as the renewal, or recognises that it is stored already.
func (r *Refresher) storeOnce(ctx context.Context, rn *renewal, attempt int) error {
	ans := rn.answered
	a := ans.locked.Account
	return vault.InTx(ctx, r.DB, func(tx pgx.Tx) error {
		now, err := r.Accounts.LockForRenewal(ctx, tx, a.ID)
		if errors.Is(err, vault.ErrNotConnected) {
			return errSuperseded // disconnected meanwhile
		}
		if err != nil {
			return err
		}
		b := &pgx.Batch{}
		switch {
		case now.Account.Version == a.Version:
			var na vault.Account
			details := map[string]any{"account_id": a.ID, "trigger": ans.trigger, "stored_after_attempts": attempt}
			if ans.attempt > 0 {
				details["attempt"] = ans.attempt
			}
			if err := r.Accounts.QueueCompareAndSwapAudited(b, a, a.Version,
				refreshedFrom(ans.locked, ans.creds, ans.scopes),
				vault.Event{UserID: a.UserID, Platform: a.Platform, Action: vault.ActionRefresh, Status: vault.Success,
					Duration: time.Since(ans.started), Details: details}, &na); err != nil {
				return err
			}
			if ans.next != nil {
				ans.next(b, swappedAccount(a, ans.creds), ans.creds)
			}
		case now.Credentials.AccessToken.Reveal() == ans.creds.AccessToken.Reveal():
			// The first commit landed; only its answer was lost.
		default:
			return errSuperseded
		}
		rn.lease.QueueRelease(b)
		if err := tx.SendBatch(ctx, b).Close(); err != nil && !errors.Is(err, vault.ErrLeaseLost) {
			return fmt.Errorf("storing renewed token: %w", err)
		}
		return nil
	})
}

// auditStoreFailed records, if the database lets it, that a renewal the
// platform answered was not stored: the cause of the invalid_grant that
// may follow, named as such.
func (r *Refresher) auditStoreFailed(rn *renewal, cause error) {
	a := rn.answered.locked.Account
	ctx, cancel := context.WithTimeout(context.Background(), renewalWriteBudget)
	defer cancel()
	if err := vault.AppendAudit(ctx, r.DB, vault.Event{UserID: a.UserID, Platform: a.Platform, Action: vault.ActionRefresh,
		Status: vault.Failed, ErrorCode: "store_failed",
		Details: map[string]any{"account_id": a.ID, "trigger": rn.answered.trigger, "cause": causeOf(cause)}}); err != nil {
		r.logger().Warn("the store_failed audit row could not be written either", zap.Error(err))
	}
}

// causeOf is a short, secret-free name for a store error.
func causeOf(err error) string {
	switch {
	case errors.Is(err, errSuperseded):
		return "superseded"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "database_unavailable"
	}
}

// swappedAccount is a after the swap stored creds: the row is locked, so
// these hold.
func swappedAccount(a vault.Account, creds vault.Credentials) vault.Account {
	swapped := a
	swapped.Version, swapped.Status = a.Version+1, vault.StatusConnected
	if !creds.Expiry.IsZero() {
		swapped.ExpiresAt = &creds.Expiry
	}
	return swapped
}
