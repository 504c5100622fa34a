package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/worker"
)

// proxied is one replica's path to the database, which a test can cut.
func (e *env) proxied(t testing.TB) (*pgtest.Proxy, *pgxpool.Pool) {
	t.Helper()
	proxy := pgtest.NewServerProxy(t)
	proxy.Up(t)
	return proxy, pgtest.Pool(t, proxy.Via(t, e.url)+"&connect_timeout=2")
}

// atThePlatform is a second listener of the test's sandbox (the same
// platforms, the same tokens) that counts the calls in flight through
// it: a replica whose providers use it is seen at the platform, so that
// a fault can be timed to meet its renewals there.
type atThePlatform struct {
	next     http.Handler
	inFlight atomic.Int64
}

func (p *atThePlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	p.next.ServeHTTP(w, r)
}

// watchedProviders are providers for every platform on a watched
// listener of the sandbox.
func (e *env) watchedProviders(t testing.TB) (*atThePlatform, map[string]*oauth.Provider) {
	t.Helper()
	watch := &atThePlatform{next: e.sandbox}
	srv := httptest.NewServer(watch)
	t.Cleanup(srv.Close)
	providers := map[string]*oauth.Provider{}
	for _, p := range sandbox.Platforms {
		providers[p] = e.provider(srv.URL, p, p+"-id", p+"-secret")
	}
	return watch, providers
}

// lost counts what a fault can cost: refresh tokens replayed at the
// platform, accounts that need their user again, stored tokens the
// platform no longer accepts.
func (e *env) lost(t testing.TB, users []string) (reuse int, reauth int64, dead int) {
	t.Helper()
	reuse = e.sandbox.Stats()["twitter"].RefreshReuse
	reauth = e.scalar(`SELECT count(*) FROM social_accounts WHERE status = 'needs_reauth'`)
	for _, u := range users {
		if e.works(u, "twitter") != nil {
			dead++
		}
	}
	return reuse, reauth, dead
}

// The faults, each while two replicas renew Twitter accounts and
// after the platform has answered renewals whose store is in flight: a
// connection reset (a restart), a black-hole and then a reset (a
// partition that ends), and a reset in the middle of the platform call.
// Nothing may be lost: no refresh token comes back to the platform, no
// account needs its user, every stored token works, also in the cycle
// after.
// platformLatency is how long each renewal waits at the platform in the
// fault tests: long enough that renewals seen there are still there when
// the fault comes, however slowly a loaded machine runs the test between
// the two.
const platformLatency = 1500 * time.Millisecond

func TestNoGrantIsLostToADatabaseFault(t *testing.T) {
	t.Parallel()
	for name, fault := range map[string]func(p *pgtest.Proxy){
		"reset after the answers": func(p *pgtest.Proxy) {
			// The answers arrive while the path is frozen (longer than
			// the platform's latency below), their stores hang, then
			// every connection is cut.
			p.Freeze()
			time.Sleep(platformLatency + 500*time.Millisecond)
			p.Down()
		},
		"black-hole, then reset": func(p *pgtest.Proxy) {
			p.Freeze()
			time.Sleep(3 * time.Second)
			p.Down()
		},
		"reset during the platform call": func(p *pgtest.Proxy) { p.Down() },
	} {
		// One fault at a time: together they would load a two-core
		// machine enough to slow the other packages' tests.
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			users := e.connectMany("twitter", 40)
			proxyA, poolA := e.proxied(t)
			_, poolB := e.proxied(t)
			// Every renewal waits platformLatency at the platform: the
			// fault meets renewals in flight, even when the check for
			// them below is slow on a loaded machine.
			e.sandbox.SetFault("twitter.token", sandbox.Fault{Latency: sandbox.Duration(platformLatency)})
			// Claims that a cut-off replica could not release run out
			// in seconds, not the default minutes.
			platformA, providersA := e.watchedProviders(t)
			wa, wb := e.workers("a", poolA, providersA), e.workers("b", poolB, nil)
			wa.Lease, wb.Lease = 5*time.Second, 5*time.Second
			wa.Refresher.StoreRetry = time.Minute
			run(t, wa)
			run(t, wb)

			e.clock.Advance(110 * time.Minute)
			// The fault must meet replica a with renewals of its own at
			// the platform: on a loaded machine b could otherwise hold
			// every running job just then, or a's be still on their way
			// through the database, and the fault would miss the window
			// the test is about (a count of a's claimed jobs missed it so).
			waitFor(t, 20*time.Second, "renewals of replica a at the platform", func() bool {
				return platformA.inFlight.Load() >= 2
			})
			fault(proxyA)
			time.Sleep(time.Second)
			proxyA.Up(t)
			waitFor(t, 90*time.Second, "the cycle", func() bool {
				return e.sandbox.Stats()["twitter"].Refreshes >= len(users) && e.settled()
			})
			if reuse, reauth, dead := e.lost(t, users); reuse != 0 || reauth != 0 || dead != 0 {
				t.Fatalf("after the fault: %d refresh tokens replayed, %d accounts need their user, %d stored tokens dead", reuse, reauth, dead)
			}
			rescued := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success' AND details ? 'stored_after_attempts'`)
			t.Logf("%d renewals were stored again after their first store failed", rescued)
			if name != "reset during the platform call" && rescued == 0 {
				t.Fatal("no renewal's store failed: the fault missed the window it is about")
			}
			// The next cycle renews every account with what was stored.
			e.sandbox.SetFault("twitter.token", sandbox.Fault{})
			e.clock.Advance(2 * time.Hour)
			waitFor(t, 60*time.Second, "the next cycle", func() bool {
				return e.sandbox.Stats()["twitter"].Refreshes >= 2*len(users) && e.settled()
			})
			if reuse, reauth, dead := e.lost(t, users); reuse != 0 || reauth != 0 || dead != 0 {
				t.Fatalf("the cycle after: %d replayed, %d need their user, %d dead", reuse, reauth, dead)
			}
		})
	}
}

// While an answer waits to be stored, no one else renews the account:
// the token API gets the stored token while it works, else
// ErrRenewalPending, and the platform is not called.
func TestARenewalInFlightKeepsOthersFromThePlatform(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(7)
	e.connect("twitter", u)
	proxy, pool := e.proxied(t)
	e.sandbox.SetFault("twitter.token", sandbox.Fault{Latency: sandbox.Duration(300 * time.Millisecond)})
	holder := e.refresher(pool, nil)
	holder.StoreRetry = time.Minute
	e.clock.Advance(110 * time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := holder.EnsureFresh(context.Background(), u, "twitter", 30*time.Minute, "token_api")
		done <- err
	}()
	waitFor(t, 5*time.Second, "the lease", func() bool { return e.scalar(`SELECT count(*) FROM renewal_leases`) == 1 })
	// The row lock is read in milliseconds; the platform takes 300.
	time.Sleep(100 * time.Millisecond)
	proxy.Freeze() // the answer arrives; its store hangs
	time.Sleep(500 * time.Millisecond)
	proxy.Down()
	if err := <-done; err != nil {
		t.Fatalf("the holder's caller: %v (it should get the platform's token)", err)
	}
	// Another replica, on a path that works: the old token still works
	// for ten minutes, so it is served, and the platform is left alone.
	other := e.refresher(e.pool, nil)
	before := e.sandbox.Stats()["twitter"].Refreshes
	tok, err := other.EnsureFresh(context.Background(), u, "twitter", 30*time.Minute, "token_api")
	if err != nil || tok.Refreshed || !tok.RenewalFailed {
		t.Fatalf("another replica during the pending store: refreshed=%v renewalFailed=%v err=%v", tok.Refreshed, tok.RenewalFailed, err)
	}
	// Past the old token's expiry it answers ErrRenewalPending.
	e.clock.Advance(15 * time.Minute)
	if _, err := other.EnsureFresh(context.Background(), u, "twitter", 0, "token_api"); err != worker.ErrRenewalPending {
		t.Fatalf("past expiry during the pending store: %v, want ErrRenewalPending", err)
	}
	if after := e.sandbox.Stats()["twitter"].Refreshes; after != before {
		t.Fatalf("the platform was called %d times while a renewal was pending", after-before)
	}
	proxy.Up(t)
	if !holder.Wait(30 * time.Second) {
		t.Fatal("the pending store did not finish after the database came back")
	}
	if err := e.works(u, "twitter"); err != nil {
		t.Fatal(err)
	}
	if n := e.scalar(`SELECT count(*) FROM renewal_leases`); n != 0 {
		t.Errorf("%d leases left after the store", n)
	}
	if st := e.sandbox.Stats()["twitter"]; st.RefreshReuse != 0 {
		t.Errorf("%d refresh tokens replayed", st.RefreshReuse)
	}
}

// A real restart (pg_ctl restart -m fast on a throwaway cluster of the
// test's own): both replicas' sessions end with 57P01 while renewals are
// at the platform, and new connections are refused until it is back.
func TestNoGrantIsLostToADatabaseRestart(t *testing.T) {
	t.Parallel()
	cluster := pgtest.NewCluster(t)
	e := newEnvAt(t, cluster.URL)
	users := e.connectMany("twitter", 150)
	e.sandbox.SetFault("twitter.token", sandbox.Fault{Latency: sandbox.Duration(300 * time.Millisecond)})
	for _, name := range []string{"a", "b"} {
		w := e.workers(name, pgtest.Pool(t, cluster.URL), nil)
		w.Lease = 5 * time.Second
		w.Refresher.StoreRetry = time.Minute
		run(t, w)
	}
	e.clock.Advance(110 * time.Minute)
	waitFor(t, 20*time.Second, "renewals in flight", func() bool { return e.sandbox.Stats()["twitter"].Refreshes >= 20 })
	cluster.Restart(t)
	waitFor(t, 120*time.Second, "the cycle", func() bool {
		return e.sandbox.Stats()["twitter"].Refreshes >= len(users) && e.settled()
	})
	if reuse, reauth, dead := e.lost(t, users); reuse != 0 || reauth != 0 || dead != 0 {
		t.Fatalf("after the restart: %d refresh tokens replayed, %d accounts need their user, %d stored tokens dead", reuse, reauth, dead)
	}
	t.Logf("%d renewals were stored again after their first store failed",
		e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success' AND details ? 'stored_after_attempts'`))
}
