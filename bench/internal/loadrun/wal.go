package loadrun

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// QueryRower is a pgx pool or connection: what a WAL mark reads through.
type QueryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// WALMark is where PostgreSQL's write-ahead log stood (bytes since its
// start), how many full-page images it had written and how many
// checkpoints it had counted: the cluster's, which the run is assumed to
// have to itself. A commit waits for its WAL to reach the disk, and after
// a checkpoint the first change of each page logs the whole page, so a
// round that starts soon after a checkpoint writes more for the same work
// than one that starts late in the cycle.
type WALMark struct{ wal, fpi, checkpoints int64 }

// MarkWAL reads the mark now.
func MarkWAL(ctx context.Context, db QueryRower) (WALMark, error) {
	var m WALMark
	// PostgreSQL 17 moved the checkpoint counts to pg_stat_checkpointer.
	counts := `SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter`
	var v int
	if err := db.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&v); err != nil {
		return m, fmt.Errorf("reading the server's version: %w", err)
	} else if v >= 170000 {
		counts = `SELECT num_timed + num_requested FROM pg_stat_checkpointer`
	}
	if err := db.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
		(SELECT wal_fpi FROM pg_stat_wal), (`+counts+`)`).Scan(&m.wal, &m.fpi, &m.checkpoints); err != nil {
		return m, fmt.Errorf("reading the WAL position and checkpoints: %w", err)
	}
	return m, nil
}

// AddWALSince sets res's WAL and full-page images per flow and its
// checkpoints since from (the checkpoint counts include skipped ones: an
// upper bound).
func AddWALSince(ctx context.Context, db QueryRower, res *Result, from WALMark) error {
	to, err := MarkWAL(ctx, db)
	if err != nil {
		return err
	}
	flows := float64(max(res.Flows, 1))
	res.WALKBPerFlow = float64(to.wal-from.wal) / 1024 / flows
	res.FPIPerFlow = float64(to.fpi-from.fpi) / flows
	checkpoints := to.checkpoints - from.checkpoints
	res.Checkpoints = &checkpoints
	return nil
}
