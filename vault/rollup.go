package vault

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RollUpAuditDays writes the daily counts of up to maxDays finished days
// (UTC) not yet rolled up into credential_audit_daily, oldest first, so
// that reports over months read a few rows per day instead of every
// event. A day's count sums credential_audit_log.events: a row of token
// reads stands for every read it counted (migration 007). A day counts as finished once the grace after its midnight has
// passed at now: a transaction that began before midnight may still
// commit a row dated that day. Each day is written in db's transaction,
// replacing what was there, so a second run is harmless. It returns the
// days rolled up.
func RollUpAuditDays(ctx context.Context, db DB, now time.Time, grace time.Duration, maxDays int) ([]time.Time, error) {
	rows, err := db.Query(ctx, `SELECT d::date FROM generate_series(
			(SELECT (min(created_at) AT TIME ZONE 'UTC')::date FROM credential_audit_log),
			(($1::timestamptz - $2::interval) AT TIME ZONE 'UTC')::date - 1,
			interval '1 day') AS d
		WHERE NOT EXISTS (SELECT 1 FROM credential_audit_rollups r WHERE r.day = d::date)
		ORDER BY 1 LIMIT $3`, now, grace, maxDays)
	if err != nil {
		return nil, fmt.Errorf("finding days to roll up: %w", err)
	}
	days, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		return nil, fmt.Errorf("finding days to roll up: %w", err)
	}
	for _, day := range days {
		if err := rollUpDay(ctx, db, day); err != nil {
			return nil, err
		}
	}
	return days, nil
}

func rollUpDay(ctx context.Context, db DB, day time.Time) error {
	return InTx(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM credential_audit_daily WHERE day = $1`, day); err != nil {
			return fmt.Errorf("rolling up %s: %w", day.Format(time.DateOnly), err)
		}
		var events int64
		err := tx.QueryRow(ctx, `WITH counted AS (
				INSERT INTO credential_audit_daily (day, action, status, platform, flow, events, duration_ms_sum, duration_count)
				SELECT $1::date, action, status, coalesce(platform, ''), coalesce(flow, ''), sum(events),
				       coalesce(sum(duration_ms), 0), count(duration_ms)
				FROM credential_audit_log
				WHERE created_at >= ($1::date)::timestamp AT TIME ZONE 'UTC'
				  AND created_at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'
				GROUP BY action, status, coalesce(platform, ''), coalesce(flow, '')
				RETURNING events)
			SELECT coalesce(sum(events), 0) FROM counted`, day).Scan(&events)
		if err != nil {
			return fmt.Errorf("rolling up %s: %w", day.Format(time.DateOnly), err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO credential_audit_rollups (day, events) VALUES ($1, $2)
			ON CONFLICT (day) DO UPDATE SET events = EXCLUDED.events, rolled_up_at = now()`, day, events)
		if err != nil {
			return fmt.Errorf("rolling up %s: %w", day.Format(time.DateOnly), err)
		}
		return nil
	})
}
