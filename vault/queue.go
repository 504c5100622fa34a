package vault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credgate/credgate/internal/appschema"
)

// Job is a claimed token_refresh_queue row.
type Job struct {
	ID        int64
	AccountID string
	// Version is the credentials_version the job was scheduled for; 0
	// for jobs written before migration 002.
	Version int64
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

// Limit is the number of attempts after which a job is dead.
func (b Backoff) Limit() int { return b.withDefaults().MaxAttempts }

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

// RefreshQueue is one worker's hold on the token_refresh_queue (leased
// jobs, at most one open, pending or running, per account): the name its
// claims are leased under (locked_by), which every finish must match.
// What concerns an account rather than a claim is a function:
// ScheduleRenewal, CancelRenewals, ScheduleUnscheduled,
// PruneFinishedJobs, ReadQueueStats.
type RefreshQueue struct {
	Worker string
}

// ErrLeaseLost is returned when a job's lease expired and another worker
// took it over.
var ErrLeaseLost = errors.New("refresh job lease was lost to another worker")

// ScheduleRenewal enqueues a refresh of account, whose credentials are at
// version, at runAt. It is idempotent: an open job for the account is
// kept; while it is pending it takes the new version, and its run time
// moves unless it is waiting out a retry backoff for the same version.
// It returns the job id.
func ScheduleRenewal(ctx context.Context, db DB, accountID string, version int64, runAt time.Time) (int64, error) {
	var id int64
	if err := db.QueryRow(ctx, scheduleSQL, accountID, version, runAt).Scan(&id); err != nil {
		return 0, fmt.Errorf("scheduling refresh: %w", err)
	}
	return id, nil
}

// QueueScheduleRenewal queues ScheduleRenewal on b.
func QueueScheduleRenewal(b *pgx.Batch, accountID string, version int64, runAt time.Time) {
	b.Queue(scheduleSQL, accountID, version, runAt)
}

// scheduleFrom is scheduleSQL with its VALUES replaced by query, which
// must yield the account id, the credentials version and the run time.
func scheduleFrom(query string) string {
	const values = "VALUES ($1, $2, $3)"
	if strings.Count(scheduleSQL, values) != 1 {
		panic("vault: scheduleSQL no longer has " + values)
	}
	return strings.Replace(scheduleSQL, values, query, 1)
}

const scheduleSQL = `INSERT INTO token_refresh_queue (social_account_id, credentials_version, run_at) VALUES ($1, $2, $3)
		ON CONFLICT (social_account_id) WHERE status IN ('pending', 'running')
		DO UPDATE SET run_at = CASE
		                  -- A job waiting out a retry backoff keeps its time,
		                  -- unless the credentials changed under it.
		                  WHEN token_refresh_queue.status = 'pending' AND (token_refresh_queue.attempts = 0
		                       OR token_refresh_queue.credentials_version IS DISTINCT FROM EXCLUDED.credentials_version)
		                  THEN EXCLUDED.run_at ELSE token_refresh_queue.run_at END,
		              attempts = CASE
		                  WHEN token_refresh_queue.status = 'pending'
		                       AND token_refresh_queue.credentials_version IS DISTINCT FROM EXCLUDED.credentials_version
		                  THEN 0 ELSE token_refresh_queue.attempts END,
		              credentials_version = CASE WHEN token_refresh_queue.status = 'pending'
		                  THEN EXCLUDED.credentials_version ELSE token_refresh_queue.credentials_version END,
		              updated_at = now()
		RETURNING id`

// claimSQL locks the due jobs in an InitPlan and updates them by primary
// key. It once joined them to the table from a CTE instead; a prepared
// statement's generic plan, which PostgreSQL settles on after a few
// runs, cannot see how few rows LIMIT $2 leaves, so it hash-joined them
// against a sequential scan of the whole queue, history included: at
// 20,000 rows each claim took 2.4 ms instead of 0.2 and was most of the
// database's work per renewal. An array of ids has no such estimate to
// get wrong (TestTheClaimReadsByIndexInItsGenericPlan).
//
// Both kinds of due job are bounded by run_at <= $4, so the index scan
// stops at the first job not yet due. With the bound only on pending
// jobs, a claim that found fewer than n read the whole open queue to its
// end, and an idle poll did so every second. A running job's run_at is
// never past the clock of the worker that claimed it (a claim takes only
// due jobs, and nothing moves a running job's run_at), so the bound
// loses no expired claim but for clock skew between replicas: one whose
// clock lags by s takes over a dead worker's job at most s later.
const claimSQL = `UPDATE token_refresh_queue q
		SET status = 'running', locked_by = $1, locked_until = now() + $3::interval,
		    attempts = q.attempts + 1, updated_at = now()
		WHERE q.id = ANY (ARRAY(
			SELECT id FROM token_refresh_queue
			WHERE run_at <= $4
			  AND (status = 'pending' OR (status = 'running' AND locked_until < now()))
			ORDER BY run_at
			LIMIT $2
			FOR UPDATE SKIP LOCKED))
		RETURNING q.id, q.social_account_id::text, coalesce(q.credentials_version, 0), q.attempts, q.run_at`

// Claim leases up to n jobs due at now to worker for lease. Jobs whose
// lease has expired are due again (once now reaches their run_at, which
// it always has unless clocks disagree; see claimSQL). FOR UPDATE SKIP LOCKED lets many
// workers claim at once without ever handing one job to two of them.
//
// Two clocks meet here on purpose: "due" compares run_at with the
// caller's clock, the one token expiries are computed with (a test moves
// it forward); a lease is measured by the database's clock, because it
// is about how long a worker has really been silent.
func (q RefreshQueue) Claim(ctx context.Context, db DB, n int, lease time.Duration, now time.Time) ([]Job, error) {
	rows, err := db.Query(ctx, claimSQL, q.Worker, n, lease, now)
	if err != nil {
		return nil, fmt.Errorf("claiming refresh jobs: %w", err)
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Job, error) {
		var j Job
		err := r.Scan(&j.ID, &j.AccountID, &j.Version, &j.Attempts, &j.RunAt)
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
func (q RefreshQueue) Complete(ctx context.Context, db DB, job Job) error {
	worker := q.Worker
	return finish(ctx, db, completeSQL, job.ID, worker, job.Attempts)
}

// LeaveToApp marks a job done without a renewal because the account's
// token is the app's and the app still renews it (app-refresh on). The
// mark (last_error app_renews) lets ScheduleUnscheduled queue the
// account again once the operator says the app's refresh is off.
func (q RefreshQueue) LeaveToApp(ctx context.Context, db DB, job Job) error {
	worker := q.Worker
	return finish(ctx, db, `UPDATE token_refresh_queue SET status = 'done', locked_by = NULL, locked_until = NULL,
		last_error = '`+appRenewsMark+`', updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'`,
		job.ID, worker, job.Attempts)
}

// appRenewsMark is last_error on a job LeaveToApp ended.
const appRenewsMark = "app_renews"

const completeSQL = `UPDATE token_refresh_queue SET status = 'done', locked_by = NULL, locked_until = NULL,
		last_error = NULL, updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'`

// Reschedule ends this claim by turning the job itself into the
// account's next one: pending at runAt for credentials version, with no
// attempts. One statement instead of Complete plus Schedule, which is
// what a renewal does every time.
func (q RefreshQueue) Reschedule(ctx context.Context, db DB, job Job, version int64, runAt time.Time) error {
	worker := q.Worker
	return finish(ctx, db, rescheduleSQL, job.ID, worker, job.Attempts, version, runAt)
}

// QueueReschedule queues Reschedule on b; a lost lease is ErrLeaseLost
// from the batch.
func (q RefreshQueue) QueueReschedule(b *pgx.Batch, job Job, version int64, runAt time.Time) {
	worker := q.Worker
	b.Queue(rescheduleSQL, job.ID, worker, job.Attempts, version, runAt).Exec(leaseHeld)
}

const rescheduleSQL = `UPDATE token_refresh_queue SET status = 'pending', locked_by = NULL, locked_until = NULL,
		last_error = NULL, attempts = 0, credentials_version = $4, run_at = $5, updated_at = now()
		WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'`

// QueueComplete queues Complete on b; a lost lease is ErrLeaseLost from
// the batch.
func (q RefreshQueue) QueueComplete(b *pgx.Batch, job Job) {
	worker := q.Worker
	b.Queue(completeSQL, job.ID, worker, job.Attempts).Exec(leaseHeld)
}

func leaseHeld(tag pgconn.CommandTag) error {
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Fail records a failed attempt: the job is retried after b's backoff
// from now, or marked dead after b.MaxAttempts. errorCode is a stable
// code, never a provider's raw message. It reports whether the job is now
// dead.
func (q RefreshQueue) Fail(ctx context.Context, db DB, job Job, errorCode string, b Backoff, now time.Time) (dead bool, err error) {
	worker := q.Worker
	b = b.withDefaults()
	if job.Attempts >= b.MaxAttempts {
		return true, finish(ctx, db, `UPDATE token_refresh_queue SET status = 'dead', locked_by = NULL, locked_until = NULL,
			last_error = $3, updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $4 AND status = 'running'`, job.ID, worker, errorCode, job.Attempts)
	}
	return false, finish(ctx, db, `UPDATE token_refresh_queue SET status = 'pending', locked_by = NULL, locked_until = NULL,
		last_error = $3, run_at = $4, updated_at = now()
		WHERE id = $1 AND locked_by = $2 AND attempts = $5 AND status = 'running'`, job.ID, worker, errorCode, now.Add(b.Delay(job.Attempts)), job.Attempts)
}

// Release ends a claim without an outcome: the job is due again at
// runAt, with this attempt counted. For a run that failed before it could
// record anything (the database went away), so the job does not wait out
// the claim's lease.
func (q RefreshQueue) Release(ctx context.Context, db DB, job Job, runAt time.Time) error {
	worker := q.Worker
	return finish(ctx, db, `UPDATE token_refresh_queue SET status = 'pending', locked_by = NULL, locked_until = NULL,
		run_at = $4, updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'`, job.ID, worker, job.Attempts, runAt)
}

// Kill marks a job dead at once, for errors no retry can fix
// (invalid_grant after the account was marked needs_reauth).
func (q RefreshQueue) Kill(ctx context.Context, db DB, job Job, errorCode string) error {
	worker := q.Worker
	return finish(ctx, db, `UPDATE token_refresh_queue SET status = 'dead', locked_by = NULL, locked_until = NULL,
		last_error = $3, updated_at = now() WHERE id = $1 AND locked_by = $2 AND attempts = $4 AND status = 'running'`, job.ID, worker, errorCode, job.Attempts)
}

// CancelRenewals removes an account's open jobs (on disconnect).
func CancelRenewals(ctx context.Context, db DB, accountID string) error {
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

// ScheduleUnscheduled queues, due at now, up to limit accounts with live
// credentials that have no job for their current credentials version:
// legacy rows backfill sealed, accounts whose job was pruned, and
// accounts from before migration 002. The worker that takes the job
// decides when the token really is due. A job that finished (done or
// dead) for the current version counts, so an account is never queued
// twice for the same token: that is what stops refresh loops.
// It returns how many jobs it queued.
func ScheduleUnscheduled(ctx context.Context, db DB, now time.Time, limit int) (int64, error) {
	cols, err := appschema.Load(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("scheduling unscheduled accounts: %w", err)
	}
	// A job that died of errors that pass (a platform outage longer than
	// the backoff) is revived after a cool-off, so that a live account's
	// token is not left to expire. A grant the platform refused, a blob
	// that does not open or a platform no longer configured stay dead.
	revived, err := db.Exec(ctx, cols.SQL(`UPDATE token_refresh_queue q SET status = 'pending', attempts = 0, run_at = $1, updated_at = now()
		FROM social_accounts a
		WHERE q.social_account_id = a.id AND q.status = 'dead' AND q.credentials_version = a.credentials_version
		  AND a.{status} IN ('connected', 'expiring') AND q.updated_at < now() - $2::interval
		  AND coalesce(q.last_error, '') NOT IN ('invalid_grant', 'needs_reauth', 'decrypt_failed', 'unknown_platform')
		  AND NOT EXISTS (SELECT 1 FROM token_refresh_queue o WHERE o.social_account_id = a.id AND o.status IN ('pending', 'running'))`),
		now, DeadJobCoolOff)
	if err != nil {
		return 0, fmt.Errorf("reviving refresh jobs: %w", err)
	}
	// Rows the app owns are queued only once the operator has said the
	// app no longer renews them (app_refresh off, migration 006): before
	// that, a renewal by credgate would race the app's own (and X
	// rotates refresh tokens: one of the two loses the grant). A job
	// left to the app then no longer counts as done.
	tag, err := db.Exec(ctx, cols.SQL(`WITH setting AS (SELECT EXISTS (SELECT 1 FROM credgate_settings
			WHERE name = 'app_refresh' AND value = 'off') AS credgate_renews_app_rows)
		INSERT INTO token_refresh_queue (social_account_id, credentials_version, run_at)
		SELECT a.id, a.credentials_version, $1 FROM social_accounts a, setting
		WHERE a.credentials_encrypted IS NOT NULL AND a.{status} IN ('connected', 'expiring')
		  AND (a.connected_via = 'credgate' OR setting.credgate_renews_app_rows)
		  AND NOT EXISTS (SELECT 1 FROM token_refresh_queue q WHERE q.social_account_id = a.id
		                  AND (q.status IN ('pending', 'running')
		                       OR (q.credentials_version = a.credentials_version
		                           AND NOT (setting.credgate_renews_app_rows AND q.last_error IS NOT DISTINCT FROM '`+appRenewsMark+`'))))
		LIMIT $2
		ON CONFLICT DO NOTHING`), now, limit)
	if err != nil {
		return 0, fmt.Errorf("scheduling unscheduled accounts: %w", err)
	}
	return revived.RowsAffected() + tag.RowsAffected(), nil
}

// DeadJobCoolOff is how long a job that died of passing errors waits
// before the scheduler tries it again.
const DeadJobCoolOff = 6 * time.Hour

// PruneFinishedJobs deletes done jobs last touched before cutoff. Dead jobs
// stay: they are the record of an account that needs a person.
func PruneFinishedJobs(ctx context.Context, db DB, cutoff time.Time) (int64, error) {
	tag, err := db.Exec(ctx, `DELETE FROM token_refresh_queue WHERE status = 'done' AND updated_at < $1`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("pruning finished refresh jobs: %w", err)
	}
	return tag.RowsAffected(), nil
}

// QueueStats is the refresh queue's health, for service-health and verify.
type QueueStats struct {
	Pending int64 `json:"pending"`
	// Due are pending jobs whose time has come.
	Due     int64 `json:"due"`
	Running int64 `json:"running"`
	// Overdue are jobs due for longer than the grace the caller gave, or
	// running under an expired lease: workers are missing or stuck.
	Overdue int64 `json:"overdue"`
	// Dead are jobs that gave up on the account's current credentials.
	Dead int64 `json:"dead"`
	// OldestDue is how long the longest-waiting due job has waited.
	OldestDue time.Duration `json:"-"`
}

// ReadQueueStats reads the queue's health at now; a job due for longer than grace
// is overdue.
func ReadQueueStats(ctx context.Context, db DB, now time.Time, grace time.Duration) (QueueStats, error) {
	var s QueueStats
	var oldest *time.Time
	cols, err := appschema.Load(ctx, db)
	if err != nil {
		return s, fmt.Errorf("reading refresh queue: %w", err)
	}
	err = db.QueryRow(ctx, cols.SQL(`SELECT
			count(*) FILTER (WHERE q.status = 'pending'),
			count(*) FILTER (WHERE q.status = 'pending' AND q.run_at <= $1),
			count(*) FILTER (WHERE q.status = 'running'),
			count(*) FILTER (WHERE (q.status = 'pending' AND q.run_at <= $2) OR (q.status = 'running' AND q.locked_until < now())),
			count(*) FILTER (WHERE q.status = 'dead' AND q.credentials_version = a.credentials_version
			                       AND a.{status} IN ('connected', 'expiring')),
			min(q.run_at) FILTER (WHERE q.status = 'pending' AND q.run_at <= $1)
		FROM token_refresh_queue q JOIN social_accounts a ON a.id = q.social_account_id`), now, now.Add(-grace)).
		Scan(&s.Pending, &s.Due, &s.Running, &s.Overdue, &s.Dead, &oldest)
	if err != nil {
		return s, fmt.Errorf("reading refresh queue: %w", err)
	}
	if oldest != nil {
		s.OldestDue = max(now.Sub(*oldest), 0)
	}
	return s, nil
}
