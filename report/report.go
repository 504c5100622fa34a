// Package report is the migration guide's monitoring and verification,
// as queries over credgate's tables: the Step 5.1 and weekly audit
// queries, the Step 4.4 metrics (connection success rate, connection
// time, errors per platform, refresh success rate), a daily breakdown
// from the audit roll-up, and the post-migration verification checklist.
// `caddy credgate report` and `caddy credgate verify` print them.
package report

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
)

// EventCount is one row of the guide's "SELECT action, status, COUNT(*)",
// summing credential_audit_log.events (a row of token reads counts each
// read).
type EventCount struct {
	Action string `json:"action"`
	Status string `json:"status"`
	Count  int64  `json:"count"`
}

// Failure is one recent failed event (no secret is ever in the log).
type Failure struct {
	At        time.Time `json:"at"`
	Action    string    `json:"action"`
	Platform  string    `json:"platform"`
	Flow      string    `json:"flow"`
	ErrorCode string    `json:"error_code"`
	UserID    string    `json:"user_id"`
}

// Rate is a success rate for one platform (and flow).
type Rate struct {
	Platform string `json:"platform"`
	Flow     string `json:"flow,omitempty"`
	Success  int64  `json:"success"`
	Failed   int64  `json:"failed"`
	// Declined counts users who said no at the consent screen
	// (access_denied): not failures of the flow, and not in Rate.
	Declined int64 `json:"declined"`
	// Rate is Success / (Success + Failed): the one definition of
	// success every credgate signal uses (docs/telemetry.md).
	Rate float64 `json:"rate"`
	// AvgMillis is the mean duration of the successful ones, where
	// recorded (connections: from start to the end of the callback).
	AvgMillis *float64 `json:"avg_ms,omitempty"`
}

// Day is one day of the roll-up.
type Day struct {
	Day     string `json:"day"`
	Action  string `json:"action"`
	Status  string `json:"status"`
	Events  int64  `json:"events"`
	Partial bool   `json:"partial,omitempty"` // today, counted live
}

// Report is everything `caddy credgate report` prints.
type Report struct {
	From        time.Time    `json:"from"`
	To          time.Time    `json:"to"`
	Events      []EventCount `json:"events"`
	Failures    []Failure    `json:"recent_failures"`
	Connections []Rate       `json:"connections"`
	Refreshes   []Rate       `json:"refreshes"`
	Daily       []Day        `json:"daily"`
}

// maxFailures bounds the recent-failures list.
const maxFailures = 20

// Build runs the queries over the window [now-since, now]; the daily
// breakdown covers the last days days.
func Build(ctx context.Context, db vault.DB, now time.Time, since time.Duration, days int) (Report, error) {
	r := Report{From: now.Add(-since), To: now}
	var err error
	if r.Events, err = collect(ctx, db, `SELECT action, status, sum(events)::bigint FROM credential_audit_log
		WHERE created_at > $1 GROUP BY action, status ORDER BY action, status`, []any{r.From},
		func(row pgx.CollectableRow) (EventCount, error) {
			var e EventCount
			return e, row.Scan(&e.Action, &e.Status, &e.Count)
		}); err != nil {
		return r, err
	}
	if r.Failures, err = collect(ctx, db, `SELECT created_at, action, coalesce(platform, ''), coalesce(flow, ''),
			coalesce(error_code, ''), coalesce(user_id::text, '')
		FROM credential_audit_log WHERE status = 'failed' AND created_at > $1
		ORDER BY created_at DESC, id DESC LIMIT $2`, []any{r.From, maxFailures},
		func(row pgx.CollectableRow) (Failure, error) {
			var f Failure
			return f, row.Scan(&f.At, &f.Action, &f.Platform, &f.Flow, &f.ErrorCode, &f.UserID)
		}); err != nil {
		return r, err
	}
	if r.Connections, err = rates(ctx, db, vault.ActionConnect, true, r.From); err != nil {
		return r, err
	}
	if r.Refreshes, err = rates(ctx, db, vault.ActionRefresh, false, r.From); err != nil {
		return r, err
	}
	r.Daily, err = Daily(ctx, db, now, days)
	return r, err
}

// notDeclined is false on an audit row of a user who declined at the
// consent screen.
const notDeclined = `error_code IS DISTINCT FROM '` + string(oauth.CodeAccessDenied) + `'`

// rates computes success rates of action by platform (and flow).
func rates(ctx context.Context, db vault.DB, action vault.Action, byFlow bool, from time.Time) ([]Rate, error) {
	flow := `''`
	if byFlow {
		flow = `coalesce(flow, '')`
	}
	return collect(ctx, db, `SELECT coalesce(platform, ''), `+flow+`,
			count(*) FILTER (WHERE status = 'success'),
			count(*) FILTER (WHERE status = 'failed' AND `+notDeclined+`),
			count(*) FILTER (WHERE status = 'failed' AND NOT `+notDeclined+`),
			avg(duration_ms) FILTER (WHERE status = 'success')
		FROM credential_audit_log WHERE action = $1 AND created_at > $2
		GROUP BY 1, 2 ORDER BY 1, 2`, []any{action, from},
		func(row pgx.CollectableRow) (Rate, error) {
			var x Rate
			err := row.Scan(&x.Platform, &x.Flow, &x.Success, &x.Failed, &x.Declined, &x.AvgMillis)
			if total := x.Success + x.Failed; total > 0 {
				x.Rate = float64(x.Success) / float64(total)
			}
			return x, err
		})
}

// Daily is the guide's weekly "SELECT DATE(created_at), status,
// COUNT(*)" by action, read from the roll-up for finished days and
// counted live for days not rolled up yet (today).
func Daily(ctx context.Context, db vault.DB, now time.Time, days int) ([]Day, error) {
	from := now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -days+1)
	return collect(ctx, db, `SELECT day::text, action, status, sum(events)::bigint, bool_or(partial) FROM (
			SELECT day, action, status, events, false AS partial FROM credential_audit_daily WHERE day >= $1::date
			UNION ALL
			SELECT (created_at AT TIME ZONE 'UTC')::date, action, status, events, true FROM credential_audit_log l
			WHERE created_at >= $1::date::timestamp AT TIME ZONE 'UTC'
			  AND NOT EXISTS (SELECT 1 FROM credential_audit_rollups r WHERE r.day = (l.created_at AT TIME ZONE 'UTC')::date)
		) d GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`, []any{from},
		func(row pgx.CollectableRow) (Day, error) {
			var d Day
			return d, row.Scan(&d.Day, &d.Action, &d.Status, &d.Events, &d.Partial)
		})
}

func collect[T any](ctx context.Context, db vault.DB, sql string, args []any, scan func(pgx.CollectableRow) (T, error)) ([]T, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, scan)
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	if out == nil {
		out = []T{}
	}
	return out, nil
}
