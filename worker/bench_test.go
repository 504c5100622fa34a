package worker_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
)

// BenchmarkRefreshReplicas measures background renewals per second: two
// instances of four workers each, their own pools, one database, the
// sandbox over HTTP in the same process, every Twitter account due at
// once. Each iteration is one whole cycle over all accounts. The
// baseline, measured in the same run on the same rows, is a bare
// one-row UPDATE per account from the same eight goroutines over the same
// two pools: the least a renewal that must write its row can cost.
//
//	go test -run XXX -bench RefreshReplicas -benchtime 3x ./worker/
//
// CREDGATE_BENCH_ACCOUNTS overrides the 10,000 accounts.
func BenchmarkRefreshReplicas(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("CREDGATE_BENCH_ACCOUNTS")); err == nil && v > 0 {
		n = v
	}
	e := newEnv(b)
	e.connectMany("twitter", n)
	pools := []*pgxpool.Pool{pgtest.Pool(b, e.url), pgtest.Pool(b, e.url)}
	ids := e.accountIDs()

	// Baseline: bare UPDATEs of the same rows.
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan string, 256)
	for i := range 8 {
		wg.Go(func() {
			for id := range next {
				if _, err := pools[i%2].Exec(context.Background(),
					`UPDATE social_accounts SET updated_at = now() WHERE id = $1`, id); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	baseline := float64(len(ids)) / time.Since(start).Seconds()

	for i, name := range []string{"bench-a", "bench-b"} {
		w := e.workers(name, pools[i], nil)
		w.Poll = 5 * time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.Run(ctx, ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
	}
	b.ResetTimer()
	var elapsed time.Duration
	for range b.N {
		before := e.sandbox.Stats()["twitter"].Refreshes
		e.clock.Advance(110 * time.Minute)
		start := time.Now()
		for e.sandbox.Stats()["twitter"].Refreshes < before+n || !e.settled() {
			time.Sleep(2 * time.Millisecond)
		}
		elapsed += time.Since(start)
	}
	b.StopTimer()
	if reuse := e.sandbox.Stats()["twitter"].RefreshReuse; reuse != 0 {
		b.Fatalf("%d refresh tokens reused", reuse)
	}
	rate := float64(n*b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "refreshes/s")
	b.ReportMetric(baseline, "bare-updates/s")
	b.ReportMetric(rate/baseline, "ratio")
}

func (e *env) accountIDs() []string {
	rows, err := e.pool.Query(context.Background(), `SELECT id::text FROM social_accounts ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatal(err)
	}
	return ids
}
