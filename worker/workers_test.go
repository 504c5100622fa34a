package worker_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Two instances, each with its own pool and four workers, share one
// database and refresh 5,000 Twitter accounts that all come due at once.
// Each account is refreshed exactly once per cycle, the platform never
// sees a rotated refresh token again (which would revoke the grant), and
// every stored token is the platform's current one — shown by a second
// cycle that works for all of them.
func TestReplicasRefreshEachAccountExactlyOncePerCycle(t *testing.T) {
	t.Parallel()
	n := 5000
	if testing.Short() {
		n = 500
	}
	e := newEnv(t)
	users := e.connectMany("twitter", n)
	var done [2]atomic.Int64
	for i, name := range []string{"replica-a", "replica-b"} {
		w := e.workers(name, pgtest.Pool(t, e.url), nil)
		w.OnResult = func(_ string, r worker.JobResult) {
			if r == worker.ResultRefreshed {
				done[i].Add(1)
			}
		}
		run(t, w)
	}

	for cycle := 1; cycle <= 2; cycle++ {
		// Into the 15-minute window before the 2-hour expiry of every token.
		e.clock.Advance(110 * time.Minute)
		waitFor(t, 3*time.Minute, "the refresh queue to drain", e.settled)
		st := e.sandbox.Stats()["twitter"]
		if st.Refreshes != cycle*n || st.RefreshReuse != 0 {
			t.Fatalf("cycle %d: the platform saw %d refreshes and %d reused refresh tokens, want %d and 0",
				cycle, st.Refreshes, st.RefreshReuse, cycle*n)
		}
		twice := e.scalar(`SELECT count(*) FROM (SELECT details->>'account_id' FROM credential_audit_log
			WHERE action = 'refresh' AND status = 'success' GROUP BY 1 HAVING count(*) <> $1) x`, cycle)
		failed := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'failed'`)
		if twice != 0 || failed != 0 {
			t.Fatalf("cycle %d: %d accounts not refreshed exactly %d times, %d failed refreshes", cycle, twice, cycle, failed)
		}
	}
	// Both instances did work: the coordination was real.
	awaitReports(func() int64 { return done[0].Load() + done[1].Load() }, int64(2*n))
	if a, b := done[0].Load(), done[1].Load(); a == 0 || b == 0 || a+b != int64(2*n) {
		t.Fatalf("replica a refreshed %d, b %d; want both busy and %d in all", a, b, 2*n)
	}
	// Every stored blob opens to a token the platform accepts now.
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	sem := make(chan struct{}, 8)
	for _, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := e.works(u, "twitter"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// An instance that dies holding leases loses them when they run out; the
// other instance takes the jobs over and nothing is lost or refreshed
// twice.
func TestJobsOfACrashedInstanceAreReclaimedAfterTheLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 40
	users := e.connectMany("twitter", n)
	e.clock.Advance(110 * time.Minute)
	// The crashed instance claimed everything and was killed: nothing
	// more comes from it.
	// A 5 s lease: the check below, a second after the survivor starts,
	// must fall inside it however slow the machine is to start it.
	claimed, err := (vault.RefreshQueue{Worker: "crashed"}).Claim(context.Background(), e.pool, 100, 5*time.Second, e.clock.Now())
	if err != nil || len(claimed) != n {
		t.Fatalf("crashed instance claimed %d (%v), want %d", len(claimed), err, n)
	}
	survivor := e.workers("survivor", pgtest.Pool(t, e.url), nil)
	run(t, survivor)
	time.Sleep(time.Second)
	if got := e.sandbox.Stats()["twitter"].Refreshes; got != 0 {
		t.Fatalf("%d jobs were taken over while their lease still ran", got)
	}
	waitFor(t, 30*time.Second, "the jobs to be reclaimed", func() bool { return e.sandbox.Stats()["twitter"].Refreshes == n && e.settled() })
	st := e.sandbox.Stats()["twitter"]
	if st.Refreshes != n || st.RefreshReuse != 0 {
		t.Fatalf("refreshes %d, reuse %d; want %d and 0", st.Refreshes, st.RefreshReuse, n)
	}
	// Each reclaimed job became its account's next look: pending, for the
	// renewed credentials, with no attempts yet.
	if wrong := e.scalar(`SELECT count(*) FROM token_refresh_queue q JOIN social_accounts a ON a.id = q.social_account_id
		WHERE q.id = ANY($1) AND NOT (q.status = 'pending' AND q.attempts = 0 AND q.credentials_version = a.credentials_version
		                              AND a.last_refreshed_at IS NOT NULL)`, jobIDs(claimed)); wrong != 0 {
		t.Errorf("%d reclaimed jobs are not their renewed account's next job", wrong)
	}
	for _, u := range users {
		if err := e.works(u, "twitter"); err != nil {
			t.Fatal(err)
		}
	}
}

func jobIDs(jobs []vault.Job) []int64 {
	var ids []int64
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	return ids
}

// 5xx answers and timeouts back off and then succeed; a forced
// invalid_grant marks the account needs_reauth, audits it, and is never
// retried.
func TestRefreshFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	const flaky, slow, revoked = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002", "00000000-0000-4000-8000-000000000003"
	for _, u := range []string{flaky, slow, revoked} {
		e.connect("twitter", u)
	}
	w := e.workers("w", e.pool, nil)
	w.Backoff = vault.Backoff{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond, MaxAttempts: 50}
	w.Refresher.ProviderTimeout = 300 * time.Millisecond
	ctx := context.Background()

	// 5xx: every token call fails until the fault is cleared.
	e.sandbox.SetFault("twitter.token", sandbox.Fault{ErrorRate: 1})
	e.clock.Advance(110 * time.Minute)
	stop := run(t, w)
	waitFor(t, 20*time.Second, "failed attempts", func() bool {
		return e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'failed' AND error_code = 'provider_unavailable'`) >= 6
	})
	// A job between attempts: pending again, its failure kept. Watched
	// for, not sampled once: with a 50 ms backoff a loaded machine may
	// have every job claimed again at any one instant.
	waitFor(t, 20*time.Second, "a job waiting out a backoff", func() bool {
		return e.scalar(`SELECT count(*) FROM token_refresh_queue WHERE status = 'pending' AND attempts > 0 AND last_error = 'provider_unavailable'`) > 0
	})
	// Timeouts next: the platform answers after the provider timeout.
	e.sandbox.SetFault("twitter.token", sandbox.Fault{Latency: sandbox.Duration(time.Second)})
	time.Sleep(time.Second)
	e.sandbox.SetFault("twitter.token", sandbox.Fault{})
	waitFor(t, 20*time.Second, "the refreshes to succeed after the faults", func() bool {
		return e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success'`) == 3 && e.settled()
	})
	stop()
	for _, u := range []string{flaky, slow, revoked} {
		if err := e.works(u, "twitter"); err != nil {
			t.Fatal(err)
		}
	}
	if reuse := e.sandbox.Stats()["twitter"].RefreshReuse; reuse != 0 {
		t.Fatalf("%d refresh tokens reused: a timed-out attempt was retried with a rotated token", reuse)
	}

	// invalid_grant: the platform refuses the grant for good.
	e.sandbox.SetFault("twitter.token", sandbox.Fault{InvalidGrant: true})
	e.clock.Advance(110 * time.Minute)
	run(t, w)
	waitFor(t, 20*time.Second, "needs_reauth", func() bool {
		return e.scalar(`SELECT count(*) FROM social_accounts WHERE status = 'needs_reauth'`) == 3
	})
	time.Sleep(300 * time.Millisecond) // time for a wrong retry to show
	if n := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'failed'
		AND error_code = 'invalid_grant' AND details->>'needs_reauth' = 'true'`); n != 3 {
		t.Errorf("%d needs_reauth audit rows, want 3 (one per account, never retried)", n)
	}
	st, err := vault.ReadQueueStats(ctx, e.pool, e.clock.Now(), 0)
	if err != nil || st.Pending != 0 || st.Running != 0 {
		t.Errorf("queue after invalid_grant: %+v %v; want no open job", st, err)
	}
	if dead := e.scalar(`SELECT count(*) FROM token_refresh_queue WHERE status = 'dead' AND last_error = 'invalid_grant' AND attempts = 1`); dead != 3 {
		t.Errorf("%d jobs dead after one invalid_grant attempt, want 3", dead)
	}
}

// The database goes away mid-run and comes back: the workers carry on
// with no manual step.
func TestWorkersResumeAfterADatabaseRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	users := e.connectMany("twitter", 20)
	cfg, err := pgxConfig(e.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := pgtest.NewServerProxy(t)
	proxy.Up(t)
	viaProxy := pgtest.Pool(t, "postgres://"+cfg.User+"@"+proxy.Addr+"/"+cfg.Database+"?sslmode=disable&connect_timeout=2")
	run(t, e.workers("w", viaProxy, nil))

	e.clock.Advance(110 * time.Minute)
	waitFor(t, 20*time.Second, "the first cycle", e.settled)
	proxy.Down()
	e.clock.Advance(2 * time.Hour)
	time.Sleep(time.Second) // the workers fail to claim meanwhile
	if got := e.sandbox.Stats()["twitter"].Refreshes; got != 20 {
		t.Fatalf("%d refreshes while the database was away, want 20 (the first cycle only)", got)
	}
	proxy.Up(t)
	waitFor(t, 60*time.Second, "the second cycle after the restart", func() bool {
		return e.sandbox.Stats()["twitter"].Refreshes == 40 && e.settled()
	})
	for _, u := range users {
		if err := e.works(u, "twitter"); err != nil {
			t.Fatal(err)
		}
	}
}

// Each platform's rule on the sandbox clock: Twitter refreshed once per
// 2-hour lifetime and never in a loop, LinkedIn with a refresh token 72 h
// ahead, Instagram's long-lived token renewed (it is older than 24 h by
// then), Facebook and LinkedIn without a refresh token marked expiring
// and then needs_reauth.
func TestEachPlatformsRuleOnTheSandboxClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	users := map[string]string{"twitter": userID(1), "linkedin-partner": userID(2), "linkedin": userID(3), "facebook": userID(4), "instagram": userID(5)}
	for key, u := range users {
		e.connect(key, u)
	}
	providers := map[string]*oauth.Provider{}
	for _, p := range []string{"twitter", "facebook", "instagram"} {
		providers[p] = e.providers[p]
	}
	// One client per platform in an instance: the partner app for the
	// LinkedIn account that has a refresh token; the other never asks
	// the platform anything.
	providers["linkedin"] = e.providers["linkedin-partner"]
	run(t, e.workers("w", e.pool, providers))
	status := func(key string) string {
		var s string
		e.pool.QueryRow(context.Background(), `SELECT status FROM social_accounts WHERE user_id = $1`, users[key]).Scan(&s)
		return s
	}
	refreshes := func(key string) int64 {
		return e.scalar(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 AND action = 'refresh' AND status = 'success'`, users[key])
	}
	step := func(d time.Duration) {
		e.clock.Advance(d)
		time.Sleep(150 * time.Millisecond)
		waitFor(t, 10*time.Second, "the queue to settle", e.settled)
	}

	step(time.Hour)
	if n := refreshes("twitter"); n != 0 {
		t.Fatalf("twitter refreshed %d times an hour in, want 0", n)
	}
	for hour := 2; hour <= 12; hour += 2 {
		step(2 * time.Hour)
		time.Sleep(200 * time.Millisecond) // a loop would show here
		if n, want := refreshes("twitter"), int64(hour/2); n != want {
			t.Fatalf("twitter after %d h: %d refreshes, want %d (once per lifetime)", hour+1, n, want)
		}
	}
	// To 58 days: past the 72-hour window of the 60-day tokens.
	for range 57 {
		step(24 * time.Hour)
	}
	if refreshes("linkedin-partner") != 1 || refreshes("instagram") != 1 {
		t.Errorf("58 days in: linkedin (with refresh token) %d, instagram %d refreshes; want 1 each",
			refreshes("linkedin-partner"), refreshes("instagram"))
	}
	if status("facebook") != "expiring" || status("linkedin") != "expiring" {
		t.Errorf("58 days in: facebook %s, linkedin without refresh token %s; want expiring", status("facebook"), status("linkedin"))
	}
	if n := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'expiring'`); n != 2 {
		t.Errorf("%d expiring audit rows, want 2", n)
	}
	step(3 * 24 * time.Hour)
	if status("facebook") != "needs_reauth" || status("linkedin") != "needs_reauth" {
		t.Errorf("past expiry: facebook %s, linkedin without refresh token %s; want needs_reauth", status("facebook"), status("linkedin"))
	}
	for _, key := range []string{"twitter", "linkedin-partner", "instagram"} {
		if status(key) != "connected" {
			t.Errorf("%s is %s, want connected", key, status(key))
		}
		if err := e.works(users[key], key); err != nil {
			t.Error(err)
		}
	}
	// The sandbox counts the long-lived exchange at connect as a renewal:
	// Facebook saw that one and nothing after it.
	if st := e.sandbox.Stats(); st["facebook"].Refreshes != 1 || st["twitter"].RefreshReuse != 0 {
		t.Errorf("facebook was asked to renew %d times (want only the connect's exchange); twitter reuse %d", st["facebook"].Refreshes, st["twitter"].RefreshReuse)
	}
}

// Legacy rows that backfill sealed get a job from the scheduler; a token
// already handled for its credentials version is never queued again.
func TestSchedulerQueuesBackfilledRowsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	pgtest.Exec(t, e.url, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token)
		VALUES ($1, 'linkedin', 'legacy-access', NULL), ($2, 'linkedin', 'legacy-access-2', NULL)`, userID(1), userID(2))
	if _, err := e.accounts.Backfill(ctx, e.pool, vault.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// The app still renews its own rows (app-refresh on, the default):
	// credgate queues none of them.
	if queued, err := worker.ScheduleUnscheduled(ctx, e.pool, e.clock.Now()); err != nil || queued != 0 {
		t.Fatalf("queued %d (%v) while the app renews its rows, want 0", queued, err)
	}
	if err := vault.SetSetting(ctx, e.pool, vault.SettingAppRefresh, "off", "test"); err != nil {
		t.Fatal(err)
	}
	queued, err := worker.ScheduleUnscheduled(ctx, e.pool, e.clock.Now())
	if err != nil || queued != 2 {
		t.Fatalf("queued %d (%v), want the 2 backfilled rows", queued, err)
	}
	w := e.workers("w", e.pool, nil)
	run(t, w)
	waitFor(t, 10*time.Second, "the jobs to run", e.settled)
	// Expiry unknown and no refresh token: nothing will come due, and the
	// row is not queued again.
	for range 3 {
		if queued, err := worker.ScheduleUnscheduled(ctx, e.pool, e.clock.Now()); err != nil || queued != 0 {
			t.Fatalf("queued %d again (%v), want 0", queued, err)
		}
	}
	if n := e.scalar(`SELECT count(*) FROM token_refresh_queue WHERE status = 'done'`); n != 2 {
		t.Errorf("%d finished jobs, want 2", n)
	}
}

// Fifty concurrent requests for one account that is about to expire
// cause one renewal; all get the same fresh token.
func TestEnsureFreshRenewsOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(7)
	e.connect("twitter", u)
	e.clock.Advance(117 * time.Minute) // 3 minutes left: inside min_validity
	r := e.refresher(pgtest.Pool(t, e.url+"&pool_max_conns=20"), nil)
	var wg sync.WaitGroup
	tokens := make(chan string, 50)
	for range 50 {
		wg.Go(func() {
			tok, err := r.EnsureFresh(context.Background(), u, "twitter", 5*time.Minute, "token_api")
			if err != nil {
				t.Error(err)
				return
			}
			tokens <- tok.Credentials.AccessToken.Reveal()
		})
	}
	wg.Wait()
	close(tokens)
	seen := map[string]bool{}
	for tok := range tokens {
		seen[tok] = true
	}
	if st := e.sandbox.Stats()["twitter"]; st.Refreshes != 1 || len(seen) != 1 {
		t.Fatalf("%d refreshes and %d distinct tokens for 50 calls, want 1 and 1", st.Refreshes, len(seen))
	}
	if err := e.works(u, "twitter"); err != nil {
		t.Fatal(err)
	}
}
