package vault

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/internal/flushloop"
)

// The runbook's first rule: the app's back end reads its tokens through
// credgate (the token API or egress) before any user moves, or the
// moved users' posts fail. BackendReads counts those reads in memory
// and adds them to backend_reads (migration 006) every few seconds, so
// that `rollout status`, `rollout set`, `verify` and service-health can
// tell, across every replica, whether the back end is reading through
// credgate, without a database write per read.

// The two ways the back end reads through credgate.
const (
	ViaTokenAPI = "token_api"
	ViaEgress   = "egress"
)

// BackendReads counts this instance's back-end reads until Flush.
type BackendReads struct {
	mu     sync.Mutex
	counts map[readKey]int64
}

type readKey struct{ platform, via string }

// Count records one read of platform's token through via.
func (b *BackendReads) Count(platform, via string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.counts == nil {
		b.counts = map[readKey]int64{}
	}
	b.counts[readKey{platform, via}]++
}

// backendReadsRetention bounds the table: the checks look back an hour.
const backendReadsRetention = 24 * time.Hour

// Flush adds the reads counted since the last flush to the current
// minute and prunes old minutes, in one transaction. On failure the
// counts are kept for the next flush.
func (b *BackendReads) Flush(ctx context.Context, db DB) error {
	b.mu.Lock()
	counts := b.counts
	b.counts = nil
	b.mu.Unlock()
	if len(counts) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	// A fixed order, so that replicas flushing at once lock rows alike.
	for _, k := range slices.SortedFunc(maps.Keys(counts), func(x, y readKey) int {
		return cmp.Or(cmp.Compare(x.platform, y.platform), cmp.Compare(x.via, y.via))
	}) {
		batch.Queue(`INSERT INTO backend_reads (platform, via, bucket, reads) VALUES ($1, $2, date_trunc('minute', now()), $3)
			ON CONFLICT (platform, via, bucket) DO UPDATE SET reads = backend_reads.reads + EXCLUDED.reads`, k.platform, k.via, counts[k])
	}
	batch.Queue(`DELETE FROM backend_reads WHERE bucket < now() - $1::interval`, backendReadsRetention)
	err := InTx(ctx, db, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
	if err != nil {
		b.mu.Lock()
		for k, n := range counts {
			if b.counts == nil {
				b.counts = map[readKey]int64{}
			}
			b.counts[k] += n
		}
		b.mu.Unlock()
		return fmt.Errorf("adding back-end reads: %w", err)
	}
	return nil
}

// Run flushes every interval until ctx ends, and once more then.
func (b *BackendReads) Run(ctx context.Context, db DB, interval time.Duration) {
	flushloop.Run(ctx, interval, 2*time.Second, func(ctx context.Context) error { return b.Flush(ctx, db) })
}

// BackendReadWindow is how far back the checks look for back-end reads.
const BackendReadWindow = time.Hour

// ReadCounts are one platform's back-end reads over a window.
type ReadCounts struct {
	TokenAPI int64 `json:"token_api"`
	Egress   int64 `json:"egress"`
}

// Total is every read.
func (r ReadCounts) Total() int64 { return r.TokenAPI + r.Egress }

// BackendReadsIn sums every replica's back-end reads per platform over
// the last window (whole minutes: the current one included).
func BackendReadsIn(ctx context.Context, db DB, window time.Duration) (map[string]ReadCounts, error) {
	rows, err := db.Query(ctx, `SELECT platform, via, sum(reads)::bigint FROM backend_reads
		WHERE bucket >= date_trunc('minute', now() - $1::interval) GROUP BY platform, via`, window)
	if err != nil {
		return nil, fmt.Errorf("reading back-end reads: %w", err)
	}
	defer rows.Close()
	out := map[string]ReadCounts{}
	for rows.Next() {
		var platform, via string
		var n int64
		if err := rows.Scan(&platform, &via, &n); err != nil {
			return nil, fmt.Errorf("reading back-end reads: %w", err)
		}
		c := out[platform]
		if via == ViaEgress {
			c.Egress += n
		} else {
			c.TokenAPI += n
		}
		out[platform] = c
	}
	return out, rows.Err()
}
