package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace"
)

// Action is what an audit row records.
type Action string

// The actions credgate writes.
const (
	ActionOAuthStart    Action = "oauth_start"
	ActionConnect       Action = "connect"
	ActionRefresh       Action = "refresh"
	ActionDisconnect    Action = "disconnect"
	ActionRevoke        Action = "revoke"
	ActionRewrap        Action = "rewrap"
	ActionBackfill      Action = "backfill"
	ActionPurge         Action = "purge_plaintext"
	ActionStateCleanup  Action = "state_cleanup"
	ActionDecryptFailed Action = "decrypt_failed"
	// ActionExpiring: a token that cannot be renewed without the user
	// (Facebook, LinkedIn without a refresh token) nears its expiry.
	ActionExpiring Action = "expiring"
	// ActionTokenRead: the app's back end fetched a token through the
	// token API (the token itself is never recorded).
	ActionTokenRead Action = "token_read"
	// ActionRolloutHalted: the rollout guard sent a platform's new starts
	// back to the legacy flow (details: the rates and samples it judged).
	ActionRolloutHalted Action = "rollout_halted"
	// ActionRolloutResumed: an operator cleared a halt.
	ActionRolloutResumed Action = "rollout_resumed"
)

// Outcome is credential_audit_log.status.
type Outcome string

// The two outcomes.
const (
	Success Outcome = "success"
	Failed  Outcome = "failed"
)

// Event is one credential_audit_log row. Details must never hold a secret:
// values are limited to strings, numbers and booleans by convention, and a
// secret.Value serialises as "[redacted]" anyway.
type Event struct {
	UserID    string
	Platform  string
	Action    Action
	Status    Outcome
	Flow      string
	Duration  time.Duration
	ErrorCode string
	TraceID   string
	Details   map[string]any
}

// auditColumns are what an Event fills, in the order of Event.args.
const auditColumns = `(user_id, platform, action, status, flow, duration_ms, error_code, trace_id, details)`

// auditInsertFrom is the INSERT that appends an audit row for each row of
// source (a CTE's name), taking the event's values (args) from parameter
// $first on: how a data-modifying statement writes its audit row in the
// same statement, so both are written or neither.
func auditInsertFrom(source string, first int) string {
	return `INSERT INTO credential_audit_log ` + auditColumns + ` SELECT ` + auditValues(first) + ` FROM ` + source
}

// auditValues are an event's parameters from $first on, each cast to
// its column's type: the statement then means the same in every pgx
// query mode, the ones a transaction pooler needs included (there the
// server may not describe the statement first, and a parameter's type
// would be guessed from its Go type).
func auditValues(first int) string {
	types := []string{"uuid", "text", "text", "text", "text", "integer", "text", "text", "jsonb"}
	values := make([]string, len(types))
	for i, t := range types {
		values[i] = fmt.Sprintf("$%d::%s", first+i, t)
	}
	return strings.Join(values, ", ")
}

// auditInsert appends one event from parameters $1 to $9.
var auditInsert = `INSERT INTO credential_audit_log ` + auditColumns + ` VALUES (` + auditValues(1) + `)`

// args are the event's values for auditColumns.
func (e Event) args() []any {
	if e.Status == "" {
		e.Status = Success
	}
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	var duration *int64
	if e.Duration > 0 {
		ms := e.Duration.Milliseconds()
		duration = &ms
	}
	// The details go as JSON text, cast by the statement: a Go map has
	// no PostgreSQL type of its own in the query modes that do not ask
	// the server (a transaction pooler's).
	encoded, err := json.Marshal(details)
	if err != nil {
		encoded = []byte(`{"details_unencodable": true}`)
	}
	return []any{nullString(e.UserID), nullString(e.Platform), string(e.Action), string(e.Status), nullString(e.Flow), duration,
		nullString(e.ErrorCode), nullString(e.TraceID), string(encoded)}
}

// AppendAudit writes one event to credential_audit_log, which the
// migration makes append-only. Run it on the same transaction as the
// change it records, so both commit or neither does.
func AppendAudit(ctx context.Context, db DB, e Event) error {
	if e.TraceID == "" {
		e.TraceID = TraceID(ctx)
	}
	_, err := db.Exec(ctx, auditInsert, e.args()...)
	if err != nil {
		return fmt.Errorf("writing audit event %s: %w", e.Action, err)
	}
	return nil
}

// QueueAudit adds the event to batch b, to be written with the
// statements around it in one round trip (and their transaction).
func QueueAudit(ctx context.Context, b *pgx.Batch, e Event) {
	if e.TraceID == "" {
		e.TraceID = TraceID(ctx)
	}
	b.Queue(auditInsert, e.args()...)
}

// TraceID is the id of the trace ctx belongs to ("" outside one), so an
// audit row leads straight to its trace.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// LastEvent is the most recent audit row of one action for a user's
// platform, for the health check's "last refresh outcome".
type LastEvent struct {
	Status    Outcome
	ErrorCode string
	At        time.Time
}

// LastAudit returns the newest event of action for (userID, platform),
// or ok=false when there is none.
func LastAudit(ctx context.Context, db DB, userID, platform string, action Action) (LastEvent, bool, error) {
	var e LastEvent
	var code *string
	err := db.QueryRow(ctx, `SELECT status, error_code, created_at FROM credential_audit_log
		WHERE user_id = $1 AND platform = $2 AND action = $3 ORDER BY created_at DESC, id DESC LIMIT 1`,
		userID, platform, action).Scan(&e.Status, &code, &e.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("reading audit log: %w", err)
	}
	if code != nil {
		e.ErrorCode = *code
	}
	return e, true, nil
}
