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

// OutcomeLog adds this instance's finished flows (flags.Outcomes) to
// rollout_outcomes, the window every replica shares. The guard judges
// that window, and `caddy credgate rollout status` shows it, so it runs
// whether or not the guard is on: with the guard off, nothing wrote the
// window, and the status said "no flows" after any number of them.
type OutcomeLog struct {
	pool     *pgxpool.Pool
	outcomes *flags.Outcomes

	mu      sync.Mutex
	flushed map[flags.OutcomeKey]uint64
}

// NewOutcomeLog returns a log of outcomes's counts into pool.
func NewOutcomeLog(pool *pgxpool.Pool, outcomes *flags.Outcomes) *OutcomeLog {
	return &OutcomeLog{pool: pool, outcomes: outcomes, flushed: map[flags.OutcomeKey]uint64{}}
}

// Run flushes every interval until ctx ends, and once more then, so that
// a replica that stops or reloads keeps its last outcomes. Only for an
// instance without the guard: the guard flushes the same log itself,
// before it judges.
func (l *OutcomeLog) Run(ctx context.Context, interval time.Duration) {
	flushloop.Run(ctx, interval, tickTimeout, l.Flush)
}

// Flush adds the outcomes counted since the last flush to the shared
// window, in the current bucket, and prunes buckets past retention. The
// database's clock dates the buckets, so that replicas, the commands and
// a resume agree on the window whatever their own clocks say.
func (l *OutcomeLog) Flush(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	snapshot := map[flags.OutcomeKey]uint64{}
	for _, c := range l.outcomes.Snapshot() {
		snapshot[c.OutcomeKey] = c.Count
	}
	type delta struct{ successes, failures, userFailures int64 }
	deltas := map[[2]string]delta{}
	for k, n := range snapshot {
		d := int64(n - l.flushed[k])
		if d == 0 {
			continue
		}
		key := [2]string{k.Platform, string(k.Arm)}
		cur := deltas[key]
		switch {
		case k.Success:
			cur.successes += d
		case k.UserCaused:
			cur.userFailures += d
		default:
			cur.failures += d
		}
		deltas[key] = cur
	}
	b := &pgx.Batch{}
	// A fixed order, so that concurrent flushes from replicas lock the
	// same rows in the same order.
	keys := slices.SortedFunc(maps.Keys(deltas), func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	for _, key := range keys {
		d := deltas[key]
		b.Queue(`INSERT INTO rollout_outcomes (platform, arm, bucket, successes, failures, user_failures)
			VALUES ($1, $2, `+currentBucket+`, $3, $4, $5)
			ON CONFLICT (platform, bucket, arm) DO UPDATE
			SET successes = rollout_outcomes.successes + EXCLUDED.successes, failures = rollout_outcomes.failures + EXCLUDED.failures,
			    user_failures = rollout_outcomes.user_failures + EXCLUDED.user_failures`,
			key[0], key[1], d.successes, d.failures, d.userFailures)
	}
	b.Queue(`DELETE FROM rollout_outcomes WHERE bucket < now() - $1::interval`, retention)
	// One transaction: a failed flush adds nothing, and the next one
	// carries the same deltas.
	err := vault.InTx(ctx, l.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	if err != nil {
		return fmt.Errorf("guard: adding outcomes to the window: %w", err)
	}
	l.flushed = snapshot
	return nil
}
