package vault

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
)

// The audit log's lifecycle: retention (PruneAudit) and erasure
// (EraseUser). credential_audit_log refuses every UPDATE and DELETE;
// migration 007 lets each of these through one scoped door, a
// transaction-local setting the trigger reads (credgate.audit_prune: a
// DELETE of rows created before that time; credgate.audit_erase: an
// UPDATE of that user's rows that only clears user_id and drops
// details.account_id). Nothing else opens them.

// The two actions the lifecycle writes about itself. Neither row names a
// user.
const (
	// ActionAuditPruned: rows before a cutoff were exported and deleted
	// (details: before, rows, events, batches, export).
	ActionAuditPruned Action = "audit_pruned"
	// ActionUserErased: a user's accounts, OAuth states and the user id
	// in their audit rows were erased (details: the counts, and each
	// platform's revocation).
	ActionUserErased Action = "user_erased"
)

// DefaultPruneBatch is how many audit rows one prune transaction deletes.
const DefaultPruneBatch = 5000

// PruneOptions say what PruneAudit deletes and where it exports it.
type PruneOptions struct {
	// Before: rows created before it go. It must be in the past.
	Before time.Time
	// Export receives every row, as one JSON object per line, before the
	// transaction that deletes it commits.
	Export io.Writer
	// Sync, when set, makes what Export received durable (os.File.Sync);
	// it runs after each batch's lines and before its commit.
	Sync func() error
	// Destination names the export in the audit_pruned row.
	Destination string
	// BatchSize is the rows per transaction; default DefaultPruneBatch.
	BatchSize int
	// Progress, when set, sees the totals after each batch.
	Progress func(PruneResult)
}

// PruneResult is what PruneAudit exported and deleted.
type PruneResult struct {
	// Rows deleted, and the events they stood for (sum of events).
	Rows, Events int64
	Batches      int
	Elapsed      time.Duration
}

// ErrNotRolledUp refuses a prune that would delete rows of a day the
// daily roll-up (credential_audit_daily) does not hold yet: the report's
// daily counts for that day would be lost with them.
type ErrNotRolledUp struct{ Day time.Time }

func (e ErrNotRolledUp) Error() string {
	return fmt.Sprintf("the audit rows of %s are not in the daily roll-up yet (a day is rolled up once it is over, an hour after midnight UTC): choose a cutoff at or before %s",
		e.Day.Format(time.DateOnly), e.Day.Format(time.DateOnly))
}

// FirstDayNotRolledUp is the first day (UTC) with audit rows before
// cutoff that credential_audit_daily does not cover, ok false when there
// is none. The roll-up writes every day from the log's first on, empty
// ones included, so the days between the first and the last row are
// checked, not the rows.
func FirstDayNotRolledUp(ctx context.Context, db DB, before time.Time) (time.Time, bool, error) {
	var day time.Time
	err := db.QueryRow(ctx, `WITH span AS (
			SELECT (min(created_at) AT TIME ZONE 'UTC')::date AS first, (max(created_at) AT TIME ZONE 'UTC')::date AS last
			FROM credential_audit_log WHERE created_at < $1)
		SELECT d::date FROM span, generate_series(span.first, span.last, interval '1 day') AS d
		WHERE NOT EXISTS (SELECT 1 FROM credential_audit_rollups r WHERE r.day = d::date)
		ORDER BY 1 LIMIT 1`, before).Scan(&day)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("checking the daily roll-up: %w", err)
	}
	return day, true, nil
}

// pruneBatch deletes the oldest batch of rows before the cutoff and
// returns each as JSON (in UTC), its events, and whether its day is
// rolled up; row_to_json keeps every column, later ones included.
const pruneBatch = `WITH gone AS (
		DELETE FROM credential_audit_log WHERE id IN (
			SELECT id FROM credential_audit_log WHERE created_at < $1 ORDER BY created_at, id LIMIT $2)
		RETURNING *)
	SELECT row_to_json(gone)::text, events, (created_at AT TIME ZONE 'UTC')::date,
		EXISTS (SELECT 1 FROM credential_audit_rollups r WHERE r.day = (gone.created_at AT TIME ZONE 'UTC')::date)
	FROM gone ORDER BY created_at, id`

// PruneAudit exports the audit rows created before opts.Before to
// opts.Export as JSON Lines and deletes them, in batches: each batch is
// one transaction that deletes its rows, writes them out (and syncs)
// and only then commits, so a row leaves the table only once it is in
// the export. A batch that fails rolls back; its lines may already be in
// the export, and a second run exports those rows again. Every day it
// deletes rows of must be in the daily roll-up (ErrNotRolledUp): run the
// roll-up first. It ends with an audit_pruned row.
func PruneAudit(ctx context.Context, db DB, opts PruneOptions) (PruneResult, error) {
	start := time.Now()
	var res PruneResult
	// PostgreSQL keeps microseconds: the statement and the trigger's
	// setting must name the same instant.
	opts.Before = opts.Before.Truncate(time.Microsecond)
	if !opts.Before.Before(start) {
		return res, fmt.Errorf("the cutoff %s is not in the past", opts.Before.UTC().Format(time.RFC3339))
	}
	if day, ok, err := FirstDayNotRolledUp(ctx, db, opts.Before); err != nil {
		return res, err
	} else if ok {
		return res, ErrNotRolledUp{Day: day}
	}
	size := opts.BatchSize
	if size <= 0 {
		size = DefaultPruneBatch
	}
	out := bufio.NewWriterSize(opts.Export, 1<<16)
	for {
		var rows, events int64
		err := InTx(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('credgate.audit_prune', $1::text, true), set_config('TimeZone', 'UTC', true)`,
				opts.Before.UTC().Format(time.RFC3339Nano)); err != nil {
				return err
			}
			rows, events = 0, 0
			var line string
			var n int64
			var day time.Time
			var rolledUp bool
			result, err := tx.Query(ctx, pruneBatch, opts.Before, size)
			if err != nil {
				return err
			}
			_, err = pgx.ForEachRow(result, []any{&line, &n, &day, &rolledUp}, func() error {
				if !rolledUp {
					return ErrNotRolledUp{Day: day}
				}
				rows++
				events += n
				if _, err := out.WriteString(line); err != nil {
					return fmt.Errorf("writing the export: %w", err)
				}
				return out.WriteByte('\n')
			})
			if err != nil {
				return err
			}
			if err := out.Flush(); err != nil {
				return fmt.Errorf("writing the export: %w", err)
			}
			if opts.Sync != nil && rows > 0 {
				if err := opts.Sync(); err != nil {
					return fmt.Errorf("syncing the export: %w", err)
				}
			}
			return nil
		})
		if err != nil {
			res.Elapsed = time.Since(start)
			if _, ok := errors.AsType[ErrNotRolledUp](err); ok {
				return res, err
			}
			return res, fmt.Errorf("pruning the audit log (batch %d; %d rows deleted before it): %w", res.Batches+1, res.Rows, err)
		}
		if rows == 0 {
			break
		}
		res.Rows += rows
		res.Events += events
		res.Batches++
		res.Elapsed = time.Since(start)
		if opts.Progress != nil {
			opts.Progress(res)
		}
	}
	res.Elapsed = time.Since(start)
	err := AppendAudit(ctx, db, Event{Action: ActionAuditPruned, Status: Success, Details: map[string]any{
		"before": opts.Before.UTC().Format(time.RFC3339Nano), "rows": res.Rows, "events": res.Events,
		"batches": res.Batches, "export": opts.Destination}})
	return res, err
}

// ErasedAccount is one social_accounts row an erasure deleted.
type ErasedAccount struct {
	ID       string
	Platform string
	// Version is credentials_version when it was deleted.
	Version int64
}

// Erasure is what EraseUser removed.
type Erasure struct {
	Accounts []ErasedAccount
	// States are the user's OAuth states (flows in progress).
	States int64
	// AuditRows are the audit rows whose user id was cleared; their
	// counts stay.
	AuditRows int64
	// WebhookEvents are the user's events in the webhook outbox.
	WebhookEvents int64
}

// ErrAccountsChanged: the user's accounts are not the ones the caller
// expected (a renewal or a connect since it revoked them). Nothing was
// deleted; revoke again.
var ErrAccountsChanged = errors.New("the user's accounts changed while they were being erased (a renewal or a new connect)")

// EraseOptions tune EraseUser.
type EraseOptions struct {
	// Expect, when not nil, are the accounts (id and credentials_version)
	// the caller revoked: when the rows found differ, nothing is deleted
	// and EraseUser returns ErrAccountsChanged.
	Expect []ErasedAccount
	// BatchSize is the audit rows per transaction; default
	// DefaultPruneBatch.
	BatchSize int
	// Details go into the user_erased audit row (revocation outcomes).
	Details map[string]any
}

// EraseUser deletes the user's social_accounts rows (their refresh jobs
// go with them), renewal leases, OAuth states and webhook events in one
// transaction,
// then clears user_id (and details.account_id) in every audit row of the
// user, in batches, keeping each row's counts; it ends with a
// user_erased row that names no user. Running it again finishes what a
// failed run left.
func EraseUser(ctx context.Context, db DB, settings Settings, userID string, opts EraseOptions) (Erasure, error) {
	var e Erasure
	size := opts.BatchSize
	if size <= 0 {
		size = DefaultPruneBatch
	}
	err := InTx(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM social_accounts WHERE user_id = $1 RETURNING id::text, platform, credentials_version`, userID)
		if err != nil {
			return fmt.Errorf("deleting the user's accounts: %w", err)
		}
		e.Accounts, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ErasedAccount, error) {
			var a ErasedAccount
			err := r.Scan(&a.ID, &a.Platform, &a.Version)
			a.Platform = settings.Platform(a.Platform)
			return a, err
		})
		if err != nil {
			return fmt.Errorf("deleting the user's accounts: %w", err)
		}
		if opts.Expect != nil && !sameAccounts(opts.Expect, e.Accounts) {
			return ErrAccountsChanged
		}
		ids := make([]string, len(e.Accounts))
		for i, a := range e.Accounts {
			ids[i] = a.ID
		}
		if _, err := tx.Exec(ctx, `DELETE FROM renewal_leases WHERE account_id = ANY($1::text[])`, ids); err != nil {
			return fmt.Errorf("deleting the user's renewal leases: %w", err)
		}
		tag, err := tx.Exec(ctx, `DELETE FROM oauth_states WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("deleting the user's OAuth states: %w", err)
		}
		e.States = tag.RowsAffected()
		// The user's webhook events, delivered or not, name them: they
		// go too (where migration 009 made the outbox).
		outbox, err := outboxExists(ctx, tx)
		if err != nil {
			return err
		}
		if outbox {
			tag, err := tx.Exec(ctx, `DELETE FROM credgate_webhook_outbox WHERE user_id = $1`, userID)
			if err != nil {
				return fmt.Errorf("deleting the user's webhook events: %w", err)
			}
			e.WebhookEvents = tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return Erasure{}, err
	}
	for {
		var n int64
		err := InTx(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('credgate.audit_erase', $1::text, true)`, userID); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `UPDATE credential_audit_log SET user_id = NULL, details = details - 'account_id'
				WHERE id IN (SELECT id FROM credential_audit_log WHERE user_id = $1 LIMIT $2)`, userID, size)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return e, fmt.Errorf("clearing the user's id from the audit log (%d rows done): %w", e.AuditRows, err)
		}
		e.AuditRows += n
		if n == 0 {
			break
		}
	}
	details := map[string]any{"accounts": len(e.Accounts), "oauth_states": e.States, "audit_rows": e.AuditRows, "webhook_events": e.WebhookEvents}
	for k, v := range opts.Details {
		details[k] = v
	}
	return e, AppendAudit(ctx, db, Event{Action: ActionUserErased, Status: Success, Details: details})
}

// sameAccounts reports whether got are exactly want, by id and version.
func sameAccounts(want, got []ErasedAccount) bool {
	if len(want) != len(got) {
		return false
	}
	versions := map[string]int64{}
	for _, a := range want {
		versions[a.ID] = a.Version
	}
	for _, a := range got {
		if v, ok := versions[a.ID]; !ok || v != a.Version {
			return false
		}
	}
	return true
}
