package worker_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/worker"
)

// BenchmarkRenewalFaults (bench/faults.sh) runs the faults, one
// renewal cycle each, over CREDGATE_BENCH_ACCOUNTS Twitter accounts
// (default 5,000) on two replicas that each reach a throwaway cluster
// through a path of their own: a fast restart of the cluster, replica A's
// path black-holed for 45 s and for 150 s and then reset, and replica A
// killed (its path cut for good and its workers stopped, so what it had
// not stored is gone, as with SIGKILL). After each it prints what was
// renewed, replayed, lost and stored on a retry.
func BenchmarkRenewalFaults(b *testing.B) {
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("CREDGATE_BENCH_ACCOUNTS")); err == nil && v > 0 {
		n = v
	}
	cluster := pgtest.NewCluster(b)
	e := newEnvAt(b, cluster.URL)
	users := e.connectMany("twitter", n)
	proxyA := pgtest.NewProxy(b, cluster.Addr())
	proxyA.Up(b)
	proxyB := pgtest.NewProxy(b, cluster.Addr())
	proxyB.Up(b)
	replica := func(name string, p *pgtest.Proxy) (*worker.Workers, func()) {
		w := e.workers(name, pgtest.Pool(b, p.Via(b, cluster.URL)+"&connect_timeout=2"), nil)
		// The default store retry (5 minutes): it must outlast the
		// 150 s black-hole.
		w.Lease = 30 * time.Second
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.Run(ctx, ctx); close(done) }()
		stop := func() { cancel(); <-done }
		b.Cleanup(stop)
		return w, stop
	}
	_, stopA := replica("a", proxyA)
	replica("b", proxyB)
	e.sandbox.SetFault("twitter.token", sandbox.Fault{Latency: sandbox.Duration(50 * time.Millisecond)})

	fmt.Printf("%-28s %8s %8s %8s %8s %8s %8s\n", "fault", "accounts", "renewed", "reused", "reauth", "dead", "retried")
	cycle := func(name string, fault func()) {
		before := e.sandbox.Stats()["twitter"]
		retriedBefore := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success' AND details ? 'stored_after_attempts'`)
		e.clock.Advance(2 * time.Hour)
		deadline := time.Now().Add(20 * time.Second)
		for e.sandbox.Stats()["twitter"].Refreshes < before.Refreshes+n/10 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		fault()
		// Done when nothing is due, running or leased, and every account
		// that can still be renewed was (one that needs its user cannot).
		deadline = time.Now().Add(20 * time.Minute)
		for time.Now().Before(deadline) {
			renewable := n - int(e.scalar(`SELECT count(*) FROM social_accounts WHERE status = 'needs_reauth'`))
			if e.sandbox.Stats()["twitter"].Refreshes >= before.Refreshes+renewable && e.settled() {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		after := e.sandbox.Stats()["twitter"]
		reuse, reauth, dead := e.lost(b, users)
		retried := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success' AND details ? 'stored_after_attempts'`) - retriedBefore
		fmt.Printf("%-28s %8d %8d %8d %8d %8d %8d\n", name, n, after.Refreshes-before.Refreshes, reuse-before.RefreshReuse, reauth, dead, retried)
	}
	for range b.N {
		cycle("none", func() {})
		cycle("restart (pg_ctl -m fast)", func() { cluster.Restart(b) })
		for _, hole := range []time.Duration{45 * time.Second, 150 * time.Second} {
			cycle(fmt.Sprintf("A black-holed %s, reset", hole), func() {
				proxyA.Freeze()
				time.Sleep(hole)
				proxyA.Down()
				proxyA.Up(b)
			})
		}
		cycle("A killed", func() {
			proxyA.Down()
			stopA()
		})
	}
}
