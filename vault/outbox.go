package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// AccountEventKind is what happened to an account that the app hears of
// through its webhook (package webhook delivers them).
type AccountEventKind string

// The account events. Each is written by the statement (or in the
// transaction) that makes the change, so it exists exactly when the
// change committed.
const (
	// EventConnected: a connect through credgate stored a token.
	EventConnected AccountEventKind = "account.connected"
	// EventDisconnected: the user disconnected (the token was revoked
	// at the platform where it can be, and wiped).
	EventDisconnected AccountEventKind = "account.disconnected"
	// EventExpiring: a token only the user can renew (Facebook, LinkedIn
	// without a refresh token) nears its end; data.expires_at says when.
	EventExpiring AccountEventKind = "account.expiring"
	// EventNeedsReauth: only the user can make the account work again
	// (data.reason: needs_reauth when the token ran out and cannot be
	// renewed, or the platform's code).
	EventNeedsReauth AccountEventKind = "account.needs_reauth"
	// EventRevoked: the platform refused the grant (invalid_grant: the
	// user revoked the app, or the refresh token is gone). The account
	// needs the user too; this is sent instead of needs_reauth.
	EventRevoked AccountEventKind = "account.revoked"
	// EventRefreshFailed: renewals failed for a reason that is not the
	// user's (the platform down, a key that does not open the blob) until
	// the job gave up (data.reason, data.attempts). The token may still
	// work until it expires; an operator should look.
	EventRefreshFailed AccountEventKind = "account.refresh_failed"
)

// AccountEventKinds are every kind, in the order the docs list them.
var AccountEventKinds = []AccountEventKind{EventConnected, EventDisconnected, EventExpiring,
	EventNeedsReauth, EventRevoked, EventRefreshFailed}

// ParseAccountEventKind accepts a kind's full name or its part after
// "account." (what a Caddyfile writes).
func ParseAccountEventKind(s string) (AccountEventKind, error) {
	for _, k := range AccountEventKinds {
		if s == string(k) || "account."+s == string(k) {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown account event %q (one of account.connected, account.disconnected, account.expiring, account.needs_reauth, account.revoked, account.refresh_failed)", s)
}

// AccountEvent is one event to announce. Data must never hold a token:
// what is in it is sent to the app as it is.
type AccountEvent struct {
	Kind      AccountEventKind
	AccountID string
	UserID    string
	// Platform is credgate's name for it ("twitter"), whatever the app's
	// table calls it.
	Platform string
	Data     map[string]any
}

// Outbox is credgate_webhook_outbox (migration 009): the account events
// waiting for, or done with, delivery to the app's webhook. The writing
// side announces only the kinds the webhook subscribes to; a nil *Outbox
// (no webhook configured) announces nothing, so the table stays empty.
type Outbox struct {
	kinds []AccountEventKind
}

// NewOutbox is an outbox that announces kinds (all of them when none).
func NewOutbox(kinds ...AccountEventKind) *Outbox {
	if len(kinds) == 0 {
		kinds = AccountEventKinds
	}
	return &Outbox{kinds: slices.Clone(kinds)}
}

// Wants reports whether events of kind k are written.
func (o *Outbox) Wants(k AccountEventKind) bool {
	return o != nil && slices.Contains(o.kinds, k)
}

// outboxValues are an event's parameters from $first on, each cast, as
// auditValues are (every pgx query mode, a pooler's included).
func outboxValues(first int) string {
	return fmt.Sprintf("$%d::text, $%d::uuid, $%d::uuid, $%d::text, $%d::jsonb", first, first+1, first+2, first+3, first+4)
}

const outboxColumns = `(kind, account_id, user_id, platform, data)`

var outboxInsert = `INSERT INTO credgate_webhook_outbox ` + outboxColumns + ` VALUES (` + outboxValues(1) + `)`

// args are e's values for outboxColumns.
func (e AccountEvent) args() []any {
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	encoded, err := json.Marshal(data)
	if err != nil {
		encoded = []byte(`{}`)
	}
	return []any{string(e.Kind), e.AccountID, e.UserID, e.Platform, string(encoded)}
}

// Append writes e when its kind is wanted. Run it in the transaction of
// the change it announces.
func (o *Outbox) Append(ctx context.Context, db DB, e AccountEvent) error {
	if !o.Wants(e.Kind) {
		return nil
	}
	if _, err := db.Exec(ctx, outboxInsert, e.args()...); err != nil {
		return fmt.Errorf("announcing %s: %w", e.Kind, err)
	}
	return nil
}

// OutboxEntry is one pending event, claimed for delivery.
type OutboxEntry struct {
	ID        int64
	EventID   string
	Kind      AccountEventKind
	AccountID string
	UserID    string
	Platform  string
	Data      json.RawMessage
	CreatedAt time.Time
	// Attempts counts this one.
	Attempts int
}

// Claim leases up to n due events for worker, the oldest first, and never
// an event while an older one of the same account is still pending: that
// is what keeps each account's events in order, whichever replica
// delivers them. SKIP LOCKED lets replicas claim side by side; the lease
// (longer than a delivery's timeout) lets another take over from one
// that died.
func (o *Outbox) Claim(ctx context.Context, db DB, worker string, n int, lease time.Duration) ([]OutboxEntry, error) {
	rows, err := db.Query(ctx, `WITH heads AS (
			SELECT DISTINCT ON (account_id) id FROM credgate_webhook_outbox
			WHERE status = 'pending' ORDER BY account_id, id
		), due AS (
			SELECT o.id FROM credgate_webhook_outbox o JOIN heads USING (id)
			WHERE o.status = 'pending' AND o.next_attempt_at <= now()
			  AND (o.locked_until IS NULL OR o.locked_until < now())
			ORDER BY o.id LIMIT $2::integer FOR UPDATE OF o SKIP LOCKED
		)
		UPDATE credgate_webhook_outbox o SET locked_by = $1::text, locked_until = now() + make_interval(secs => $3::float8), attempts = o.attempts + 1
		FROM due WHERE o.id = due.id
		RETURNING o.id, o.event_id::text, o.kind, o.account_id::text, o.user_id::text, o.platform, o.data::text, o.created_at, o.attempts`,
		worker, n, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claiming webhook events: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (OutboxEntry, error) {
		var e OutboxEntry
		var data string
		err := row.Scan(&e.ID, &e.EventID, &e.Kind, &e.AccountID, &e.UserID, &e.Platform, &data, &e.CreatedAt, &e.Attempts)
		e.Data = json.RawMessage(data)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("claiming webhook events: %w", err)
	}
	slices.SortFunc(out, func(a, b OutboxEntry) int { return int(a.ID - b.ID) })
	return out, nil
}

// Delivered records that the app accepted e, as worker claimed it. It
// does so even when worker's lease ran out meanwhile, unless another
// replica has claimed e since and is still on it: marking it delivered
// then would let the account's next event go out while that replica's
// copy of e is still in flight, and the app could get them out of order.
// That replica marks it once it is done (the app gets it twice, which at
// least once allows).
func (o *Outbox) Delivered(ctx context.Context, db DB, e OutboxEntry, worker string) error {
	_, err := db.Exec(ctx, `UPDATE credgate_webhook_outbox SET status = 'delivered', finished_at = now(),
		locked_by = NULL, locked_until = NULL, last_error = NULL
		WHERE id = $1::bigint AND status = 'pending'
		  AND (locked_by = $2::text OR locked_by IS NULL OR locked_until < now())`, e.ID, worker)
	if err != nil {
		return fmt.Errorf("recording webhook delivery: %w", err)
	}
	return nil
}

// Fail records that an attempt at e failed, with why (a status or a
// transport error: never a body, which the app wrote): e is tried again
// after wait, or, when that would be more than retryFor after e was
// written, kept as failed (gaveUp), and the account's later events go
// on. The times are the database's, as Claim's are: a replica whose clock
// is off neither skips nor stretches the backoff. Only the holder of the
// lease records it; a lost lease means another replica is on it.
func (o *Outbox) Fail(ctx context.Context, db DB, e OutboxEntry, worker, why string, wait, retryFor time.Duration) (gaveUp bool, err error) {
	var status string
	err = db.QueryRow(ctx, `UPDATE credgate_webhook_outbox SET last_error = $3::text, locked_by = NULL, locked_until = NULL,
			status = CASE WHEN now() + make_interval(secs => $5::float8) - created_at > make_interval(secs => $6::float8)
			              THEN 'failed' ELSE 'pending' END,
			finished_at = CASE WHEN now() + make_interval(secs => $5::float8) - created_at > make_interval(secs => $6::float8)
			                   THEN now() END,
			next_attempt_at = now() + make_interval(secs => $5::float8)
		WHERE id = $1::bigint AND locked_by = $2::text AND attempts = $4::integer AND status = 'pending'
		RETURNING status`, e.ID, worker, why, e.Attempts, wait.Seconds(), retryFor.Seconds()).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("recording a failed webhook delivery: %w", err)
	}
	return status == "failed", nil
}

// Release hands e back untried (this replica is stopping): the attempt
// it claimed is not counted, no backoff starts, and e is due again at
// once for whichever replica claims it next.
func (o *Outbox) Release(ctx context.Context, db DB, e OutboxEntry, worker string) error {
	_, err := db.Exec(ctx, `UPDATE credgate_webhook_outbox SET locked_by = NULL, locked_until = NULL, attempts = attempts - 1
		WHERE id = $1::bigint AND locked_by = $2::text AND attempts = $3::integer AND status = 'pending'`, e.ID, worker, e.Attempts)
	if err != nil {
		return fmt.Errorf("releasing a webhook event: %w", err)
	}
	return nil
}

// The failures (an entry's last_error) that say the app was down or
// unreachable, rather than refusing one event: only these does Wake cut
// short. An event the app refuses on its own (a 400, a 500 from a handler
// that fails on that account) keeps its backoff while others go through.
var appDownErrors = []string{"status 502", "status 503", "status 504", "timeout", "request failed"}

// appUnreachable prefixes a failed connection's last_error.
const appUnreachable = "connection failed"

// AppDown reports whether why (a failed attempt's reason) says the app
// was down or unreachable: the failures Wake cuts short.
func AppDown(why string) bool {
	return slices.Contains(appDownErrors, why) || strings.HasPrefix(why, appUnreachable)
}

// Wake makes every pending event that is waiting out a backoff because
// the app was down due now: the app just took an event, so it is back,
// and those events need not wait out the rest of their backoff.
func (o *Outbox) Wake(ctx context.Context, db DB) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE credgate_webhook_outbox SET next_attempt_at = now()
		WHERE status = 'pending' AND next_attempt_at > now() AND attempts > 0
		  AND (last_error IN ('`+strings.Join(appDownErrors, "', '")+`') OR last_error LIKE '`+appUnreachable+`%')`)
	if err != nil {
		return 0, fmt.Errorf("waking webhook events: %w", err)
	}
	return tag.RowsAffected(), nil
}

// OutboxStats is the outbox at a glance, for service-health and the
// metrics.
type OutboxStats struct {
	// Pending events, and of them the ones whose last attempt failed.
	Pending, Failing int64
	// Failed: given up, kept for the operator.
	Failed int64
	// OldestPending is the creation time of the oldest pending event
	// (zero when none).
	OldestPending time.Time
	// LastError is the newest failure's reason among pending or failed
	// events ("" when none).
	LastError string
}

// Stats reads the outbox's state.
func (o *Outbox) Stats(ctx context.Context, db DB) (OutboxStats, error) {
	var s OutboxStats
	var oldest *time.Time
	var last *string
	err := db.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE status = 'pending'),
			count(*) FILTER (WHERE status = 'pending' AND attempts > 0 AND last_error IS NOT NULL),
			count(*) FILTER (WHERE status = 'failed'),
			min(created_at) FILTER (WHERE status = 'pending'),
			(SELECT last_error FROM credgate_webhook_outbox WHERE last_error IS NOT NULL AND status <> 'delivered'
			 ORDER BY coalesce(finished_at, next_attempt_at) DESC LIMIT 1)
		FROM credgate_webhook_outbox WHERE status IN ('pending', 'failed')`).Scan(&s.Pending, &s.Failing, &s.Failed, &oldest, &last)
	if err != nil {
		return s, fmt.Errorf("reading the webhook outbox: %w", err)
	}
	if oldest != nil {
		s.OldestPending = *oldest
	}
	if last != nil {
		s.LastError = *last
	}
	return s, nil
}

// Prune deletes delivered events finished before delivered, and failed
// ones finished before failed (kept longer: an operator may still look).
func (o *Outbox) Prune(ctx context.Context, db DB, delivered, failed time.Time) (int64, error) {
	tag, err := db.Exec(ctx, `DELETE FROM credgate_webhook_outbox
		WHERE (status = 'delivered' AND finished_at < $1::timestamptz) OR (status = 'failed' AND finished_at < $2::timestamptz)`, delivered, failed)
	if err != nil {
		return 0, fmt.Errorf("pruning the webhook outbox: %w", err)
	}
	return tag.RowsAffected(), nil
}

// ErrNoOutbox: the outbox table is missing (migration 009 not applied).
var ErrNoOutbox = errors.New("credgate_webhook_outbox is missing: run `caddy credgate migrate up`")

// CheckOutbox reports whether the outbox table exists, so that a webhook
// configured before its migration is refused at start with the fix
// rather than failing every connect.
func CheckOutbox(ctx context.Context, db DB) error {
	ok, err := outboxExists(ctx, db)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNoOutbox
	}
	return nil
}

// outboxExists reports whether migration 009 made the outbox table.
func outboxExists(ctx context.Context, db DB) (bool, error) {
	var ok bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('credgate_webhook_outbox') IS NOT NULL`).Scan(&ok); err != nil {
		return false, fmt.Errorf("looking for the webhook outbox: %w", err)
	}
	return ok, nil
}
