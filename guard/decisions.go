package guard

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/flushloop"
	"github.com/credgate/credgate/vault"
)

// DecisionLog adds this instance's rollout decisions (by platform, arm
// and reason) to rollout_decisions, the window every replica shares, so
// that `caddy credgate rollout status` can say why users went where they
// went, whichever replica decided. It runs whether or not the guard is
// on: it judges nothing, it only counts.
type DecisionLog struct {
	pool      *pgxpool.Pool
	decisions *flags.Decisions

	mu      sync.Mutex
	flushed map[decisionKey]uint64
}

type decisionKey struct {
	platform, arm, reason string
}

// NewDecisionLog returns a log of decisions's counts into pool.
func NewDecisionLog(pool *pgxpool.Pool, decisions *flags.Decisions) *DecisionLog {
	return &DecisionLog{pool: pool, decisions: decisions, flushed: map[decisionKey]uint64{}}
}

// Run flushes every interval until ctx ends, and once more then, so that
// a replica that stops keeps its last counts.
func (d *DecisionLog) Run(ctx context.Context, interval time.Duration) {
	flushloop.Run(ctx, interval, 2*time.Second, d.Flush)
}

// Flush adds the decisions counted since the last flush to the current
// bucket and prunes buckets past retention, in one transaction.
func (d *DecisionLog) Flush(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	snapshot := map[decisionKey]uint64{}
	for _, c := range d.decisions.Snapshot() {
		snapshot[decisionKey{c.Platform, string(c.Arm), string(c.Reason)}] += c.Count
	}
	b := &pgx.Batch{}
	// A fixed order, so that concurrent flushes from replicas lock the
	// same rows in the same order.
	for _, k := range slices.SortedFunc(maps.Keys(snapshot), func(a, b decisionKey) int {
		return cmp.Or(cmp.Compare(a.platform, b.platform), cmp.Compare(a.arm, b.arm), cmp.Compare(a.reason, b.reason))
	}) {
		delta := int64(snapshot[k] - d.flushed[k])
		if delta == 0 {
			continue
		}
		b.Queue(`INSERT INTO rollout_decisions (platform, arm, reason, bucket, decisions) VALUES ($1, $2, $3, `+currentBucket+`, $4)
			ON CONFLICT (platform, bucket, arm, reason) DO UPDATE SET decisions = rollout_decisions.decisions + EXCLUDED.decisions`,
			k.platform, k.arm, k.reason, delta)
	}
	if b.Len() == 0 {
		return nil
	}
	b.Queue(`DELETE FROM rollout_decisions WHERE bucket < now() - $1::interval`, retention)
	if err := vault.InTx(ctx, d.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		return fmt.Errorf("guard: adding decisions to the window: %w", err)
	}
	d.flushed = snapshot
	return nil
}

// ReasonCount is how many decisions went to an arm for a reason.
type ReasonCount struct {
	Arm       string `json:"arm"`
	Reason    string `json:"reason"`
	Decisions int64  `json:"decisions"`
}

// DecisionsInWindow reads every replica's decisions over the window, by
// platform, most frequent first.
func DecisionsInWindow(ctx context.Context, db vault.DB, window time.Duration) (map[string][]ReasonCount, error) {
	rows, err := db.Query(ctx, `SELECT platform, arm, reason, sum(decisions)::bigint FROM rollout_decisions
		WHERE bucket >= now() - $1::interval GROUP BY platform, arm, reason`, window)
	if err != nil {
		return nil, fmt.Errorf("guard: reading the decisions: %w", err)
	}
	defer rows.Close()
	out := map[string][]ReasonCount{}
	for rows.Next() {
		var platform string
		var c ReasonCount
		if err := rows.Scan(&platform, &c.Arm, &c.Reason, &c.Decisions); err != nil {
			return nil, fmt.Errorf("guard: reading the decisions: %w", err)
		}
		out[platform] = append(out[platform], c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("guard: reading the decisions: %w", err)
	}
	for _, list := range out {
		slices.SortFunc(list, func(a, b ReasonCount) int {
			return cmp.Or(cmp.Compare(b.Decisions, a.Decisions), cmp.Compare(a.Arm, b.Arm), cmp.Compare(a.Reason, b.Reason))
		})
	}
	return out, nil
}
