package vault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Job is a claimed token_refresh_queue row.
type Job struct {
	ID        int64
	AccountID string
	// Attempts counts this claim.
	Attempts int
	RunAt    time.Time
}

// Backoff is the retry policy for failed refreshes.
type Backoff struct {
	// Base is the first delay; it doubles per attempt. Default 1m.
	Base time.Duration
	// Max caps the delay. Default 1h.
	Max time.Duration
	// MaxAttempts marks a job dead after this many failed attempts.
	// Default 8.
	MaxAttempts int
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = time.Minute
	}
	if b.Max <= 0 {
		b.Max = time.Hour
	}
	if b.MaxAttempts <= 0 {
		b.MaxAttempts = 8
	}
	return b
}

// Delay is the wait before retry number attempt (1-based): exponential,
// capped, with "equal jitter" (half fixed, half random) so that replicas
// that failed together do not retry together.
func (b Backoff) Delay(attempt int) time.Duration {
	b = b.withDefaults()
	d := b.Max
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 32 {
		if exp := b.Base << (attempt - 1); exp > 0 && exp < b.Max {
			d = exp
		}
	}
	half := d / 2
	return half + rand.N(half+1)
}

// RefreshQueue is the token_refresh_queue: leased jobs, at most one open
// (pending or running) per account.
type RefreshQueue struct{}

// ErrLeaseLost is returned when a job's lease expired and another worker
// took it over.
var ErrLeaseLost = errors.New("refresh job lease was lost to another worker")

// Schedule enqueues a refresh of account at runAt. It is idempotent: an
// open job for the account is kept, its run time moved only while it has
// never been tried (a job in backoff keeps its retry time).
// It returns the job id.
func (RefreshQueue) Schedule(ctx context.Context, db DB, accountID string, runAt time.Time) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, `INSERT INTO token_refresh_queue (social_account_id, run_at) VALUES ($1, $2)
		ON CONFLICT (social_account_id) WHERE status IN ('pending', 'running')
		DO UPDATE SET run_at = CASE
		                  -- A job waiting out a retry backoff keeps its time.
		                  WHEN token_refresh_queue.status = 'pending' AND token_refresh_queue.attempts = 0
		                  THEN EXCLUDED.run_at ELSE token_refresh_queue.run_at END,
		              updated_at = now()
		RETURNING id`, accountID, runAt).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("scheduling refresh: %w", err)
	}
	return id, nil
}

// Claim leases up to n due jobs to worker for lease. Jobs whose lease has
// expired are due again. FOR UPDATE SKIP LOCKED lets many workers claim at
// once without ever handing one job to two of them.
func (RefreshQueue) Claim(ctx context.Context, db DB, worker string, n int, lease time.Duration) ([]Job, error) {
	rows, err := db.Query(ctx, `WITH due AS (
			SELECT id FROM token_refresh_queue
			WHERE (status = 'pending' AND run_at <= now())
			   OR (status = 'running' AND locked_until < now())
			ORDER BY run_at
			LIMIT $2
			FOR UPDATE SKIP LOCKED)
		UPDATE token_refresh_queue q
		SET status = 'running', locked_by = $1, locked_until = now() + $3::interval,
		    attempts = q.attempts + 1, updated_at = now()
		FROM due WHERE q.id = due.id
		RETURNING q.id, q.social_account_id::text, q.attempts, q.run_at`, worker, n, lease)
	if err != nil {
		return nil, fmt.Errorf("claiming refresh jobs: %w", err)
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Job, error) {
		var j Job
		err := r.Scan(&j.ID, &j.AccountID, &j.Attempts, &j.RunAt)
		return j, err
	})
	if err != nil {
		return nil, fmt.Errorf("claiming refresh jobs: %w", err)
	}
	return jobs, nil
}

// Complete marks a job done. Complete, Fail and Kill match the claim by
// worker and attempt number, so a worker whose lease expired cannot finish
// the job another claim now holds, even under the same worker name.
func (RefreshQueue) Complete(ctx context.Context, db DB, job Job, worker string) error {
	return finish(ctx, db, `UPDATE token_refresh_queue SET status = 'done', locked_by = NULL, locked_until = NULL,
		last_error = NULL, updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'`, job.ID, worker, job.Attempts)
}

// Fail records a failed attempt: the job is retried after b's backoff, or
// marked dead after b.MaxAttempts. errorCode is a stable code, never a
// provider's raw message. It reports whether the job is now dead.
func (RefreshQueue) Fail(ctx context.Context, db DB, job Job, worker, errorCode string, b Backoff) (dead bool, err error) {
	b = b.withDefaults()
	if job.Attempts >= b.MaxAttempts {
		return true, finish(ctx, db, `UPDATE token_refresh_queue SET status = 'dead', locked_by = NULL, locked_until = NULL,
			last_error = $3, updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $4 AND status = 'running'`, job.ID, worker, errorCode, job.Attempts)
	}
	return false, finish(ctx, db, `UPDATE token_refresh_queue SET status = 'pending', locked_by = NULL, locked_until = NULL,
		last_error = $3, run_at = now() + $4::interval, updated_at = now()
		WHERE id = $1 AND locked_by = $2 AND attempts = $5 AND status = 'running'`, job.ID, worker, errorCode, b.Delay(job.Attempts), job.Attempts)
}

// Kill marks a job dead at once, for errors no retry can fix
// (invalid_grant after the account was marked needs_reauth).
func (RefreshQueue) Kill(ctx context.Context, db DB, job Job, worker, errorCode string) error {
	return finish(ctx, db, `UPDATE token_refresh_queue SET status = 'dead', locked_by = NULL, locked_until = NULL,
		last_error = $3, updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $4 AND status = 'running'`, job.ID, worker, errorCode, job.Attempts)
}

// Cancel removes an account's open jobs (on disconnect).
func (RefreshQueue) Cancel(ctx context.Context, db DB, accountID string) error {
	_, err := db.Exec(ctx, `DELETE FROM token_refresh_queue WHERE social_account_id = $1 AND status IN ('pending', 'running')`, accountID)
	if err != nil {
		return fmt.Errorf("cancelling refresh jobs: %w", err)
	}
	return nil
}

func finish(ctx context.Context, db DB, sql string, args ...any) error {
	tag, err := db.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("updating refresh job: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}
