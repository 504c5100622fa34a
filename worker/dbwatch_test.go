package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/worker"
)

// The database watch through a proxy that can refuse and stall
// PostgreSQL: refused is down at once, and back is up again; a pool whose
// every connection is in use is busy, not down; a database that stops
// answering is down only after SlowOutage pings ran out of time, never
// off one slow ping.
func TestTheDatabaseWatchTellsDownFromSlowAndBusy(t *testing.T) {
	t.Parallel()
	proxy := pgtest.NewServerProxy(t)
	proxy.Up(t)
	pool := pgtest.Pool(t, proxy.Via(t, pgtest.Database(t)), func(c *pgxpool.Config) {
		c.MaxConns = 2
		c.ConnConfig.ConnectTimeout = 2 * time.Second
	})
	const budget = 300 * time.Millisecond
	w := &worker.DatabaseWatch{Pool: pool, Every: 50 * time.Millisecond, PingTimeout: budget, SlowOutage: 3}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor := func(what string, down bool, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for w.Down() != down {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Down() is still %v after %s", what, !down, within)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stays := func(what string, down bool, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if w.Down() != down {
				t.Fatalf("%s: Down() became %v", what, !down)
			}
		}
	}
	stays("answering", false, 300*time.Millisecond)

	var held []*pgxpool.Conn
	release := func() {
		for _, c := range held {
			c.Release()
		}
		held = nil
	}
	// Before the pool's close, which waits for them, if the test fails.
	t.Cleanup(release)
	for range 2 {
		c, err := pool.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	stays("every connection in use", false, 3*budget+500*time.Millisecond)
	release()

	proxy.Down()
	waitFor("refused", true, 3*time.Second)
	proxy.Up(t)
	waitFor("back", false, 5*time.Second)

	proxy.Freeze()
	t.Cleanup(proxy.Thaw) // a failure here must not leave the pool's close waiting
	// Three pings must run out of their budget first; the first may have
	// begun just before the freeze.
	stays("one slow ping", false, 2*budget-100*time.Millisecond)
	waitFor("not answering", true, 10*time.Second)
	proxy.Thaw()
	waitFor("answering again", false, 10*time.Second)
}
