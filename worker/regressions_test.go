package worker_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Review finding: the renewal's row lock (then FOR UPDATE) blocked the
// scheduler's foreign-key check for the whole platform call, and the
// renewal's own job insert then deadlocked against the scheduler's row:
// PostgreSQL aborted the renewal after Twitter had rotated the token.
func TestSchedulerDuringARenewalNeitherDeadlocksNorLosesTheToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(1)
	e.connect("twitter", u)
	// No open job: as after a dead job or a rotation's version bump.
	pgtest.Exec(t, e.url, `DELETE FROM token_refresh_queue`)
	e.clock.Advance(117 * time.Minute)
	e.sandbox.SetFault("twitter.token", sandbox.Fault{Latency: sandbox.Duration(700 * time.Millisecond)})
	r := e.refresher(e.pool, nil)
	done := make(chan error, 1)
	go func() {
		_, err := r.EnsureFresh(context.Background(), u, "twitter", 5*time.Minute, "token_api")
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the renewal holds the row lock, waiting for the platform
	if _, err := worker.ScheduleUnscheduled(context.Background(), pgtest.Pool(t, e.url), e.clock.Now()); err != nil {
		t.Fatalf("scheduler: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if st := e.sandbox.Stats()["twitter"]; st.Refreshes != 1 || st.RefreshReuse != 0 {
		t.Fatalf("refreshes %d, reuse %d", st.Refreshes, st.RefreshReuse)
	}
	e.sandbox.SetFault("twitter.token", sandbox.Fault{})
	if err := e.works(u, "twitter"); err != nil {
		t.Fatal(err)
	}
}

// Review finding: a worker stopped (or a token API caller gone) right
// after the platform answered rolled the new token back, and the next
// attempt presented the rotated refresh token. The writes now finish.
func TestARenewalTheCallerAbandonsAfterThePlatformAnsweredIsStillSaved(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(2)
	e.connect("twitter", u)
	e.clock.Advance(110 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	// The caller goes away the moment the platform's answer has been read.
	auth, token, api, _ := oauth.SandboxURLs("twitter", e.sandboxURL)
	p, err := oauth.New("twitter", oauth.Config{ClientID: "twitter-id", ClientSecret: secret.New("twitter-secret"), RedirectURL: redirect,
		AuthURL: auth, TokenURL: token, APIBase: api, Now: e.clock.Now, Transport: cancelOnRead{http.DefaultTransport, cancel}})
	if err != nil {
		t.Fatal(err)
	}
	providers := map[string]*oauth.Provider{"twitter": p}
	w := e.workers("w", e.pool, providers)
	jobs, err := (vault.RefreshQueue{Worker: "w"}).Claim(context.Background(), e.pool, 1, time.Minute, e.clock.Now())
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	_, res, err := w.RunJob(ctx, jobs[0])
	if err != nil || res != worker.ResultRefreshed {
		t.Fatalf("job: %v %v; want refreshed and saved", res, err)
	}
	if err := e.works(u, "twitter"); err != nil {
		t.Fatal(err)
	}
	// The stored refresh token is the current one: the next cycle works.
	e.clock.Advance(2 * time.Hour)
	if _, err := e.refresher(e.pool, nil).EnsureFresh(context.Background(), u, "twitter", 30*time.Minute, "token_api"); err != nil {
		t.Fatal(err)
	}
	if st := e.sandbox.Stats()["twitter"]; st.Refreshes != 2 || st.RefreshReuse != 0 {
		t.Fatalf("refreshes %d, reuse %d; want 2 and 0", st.Refreshes, st.RefreshReuse)
	}
}

// Review finding: after backfill, the app may refresh a legacy row's
// Twitter token itself; renewing from the (older) blob then presented a
// superseded refresh token. Renewal uses the app's newer plaintext, and
// writes the result back where the app reads it.
func TestLegacyRowRenewsFromTheAppsNewerPlaintext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(3)
	// The legacy app connected the user (a real sandbox grant), and
	// backfill sealed its tokens.
	first := e.grant("twitter", u)
	pgtest.Exec(t, e.url, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token) VALUES ($1, 'twitter', $2, $3)`,
		u, first.AccessToken.Reveal(), first.RefreshToken.Reveal())
	if _, err := e.accounts.Backfill(context.Background(), e.pool, vault.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Then the app refreshed it on its own: the blob is now stale.
	newer, err := e.providers["twitter"].Refresh(context.Background(), first)
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, e.url, `UPDATE social_accounts SET access_token = $2, refresh_token = $3 WHERE user_id = $1`,
		u, newer.AccessToken.Reveal(), newer.RefreshToken.Reveal())
	// credgate renews the app's rows only once the app's refresh is off.
	if err := vault.SetSetting(context.Background(), e.pool, vault.SettingAppRefresh, "off", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.ScheduleUnscheduled(context.Background(), e.pool, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	run(t, e.workers("w", e.pool, nil))
	waitFor(t, 10*time.Second, "the legacy row's renewal", func() bool {
		return e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh'`) == 1 && e.settled()
	})
	if st := e.sandbox.Stats()["twitter"]; st.RefreshReuse != 0 || st.Refreshes != 2 {
		t.Fatalf("refreshes %d, reuse %d; want the app's and credgate's, and no reuse", st.Refreshes, st.RefreshReuse)
	}
	var plain string
	e.pool.QueryRow(context.Background(), `SELECT access_token FROM social_accounts WHERE user_id = $1`, u).Scan(&plain)
	_, c, err := e.accounts.Get(context.Background(), e.pool, u, "twitter")
	if err != nil || plain != c.AccessToken.Reveal() || plain == newer.AccessToken.Reveal() {
		t.Fatalf("the app's plaintext is not credgate's new token (%v)", err)
	}
	if err := e.works(u, "twitter"); err != nil {
		t.Fatal(err)
	}
	// A row credgate connected never sends its tokens as plaintext: its
	// plaintext columns stay empty through a renewal.
	v := userID(4)
	e.connect("twitter", v)
	e.clock.Advance(110 * time.Minute)
	waitFor(t, 10*time.Second, "the renewal", func() bool {
		return e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND user_id = $1`, v) == 1
	})
	if n := e.scalar(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND (access_token IS NOT NULL OR refresh_token IS NOT NULL)`, v); n != 0 {
		t.Error("a renewal wrote plaintext on a row credgate connected")
	}
}

// Review finding: a platform outage longer than the backoff killed the
// job for good. The scheduler revives jobs that died of passing errors
// after the cool-off; a refused grant stays dead.
func TestDeadJobsOfPassingErrorsAreRevived(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i, lastError := range []string{"provider_unavailable", "invalid_grant"} {
		e.connect("twitter", userID(10+i))
		pgtest.Exec(t, e.url, `UPDATE token_refresh_queue q SET status = 'dead', last_error = $2, updated_at = now() - interval '7 hours'
			FROM social_accounts a WHERE a.id = q.social_account_id AND a.user_id = $1`, userID(10+i), lastError)
	}
	n, err := worker.ScheduleUnscheduled(context.Background(), e.pool, e.clock.Now())
	if err != nil || n != 1 {
		t.Fatalf("revived %d (%v), want the provider_unavailable job only", n, err)
	}
	if dead := e.scalar(`SELECT count(*) FROM token_refresh_queue WHERE status = 'dead' AND last_error = 'invalid_grant'`); dead != 1 {
		t.Error("the invalid_grant job was revived")
	}
}

// Review finding: a job whose claims kept running out of lease was
// retried for ever; past refresh_max_attempts it dies, audited.
func TestAJobClaimedTooOftenDies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.connect("twitter", userID(20))
	e.clock.Advance(110 * time.Minute)
	pgtest.Exec(t, e.url, `UPDATE token_refresh_queue SET attempts = 9`)
	w := e.workers("w", e.pool, nil)
	jobs, err := (vault.RefreshQueue{Worker: "w"}).Claim(context.Background(), e.pool, 1, time.Minute, e.clock.Now())
	if err != nil || len(jobs) != 1 {
		t.Fatal(jobs, err)
	}
	if _, res, err := w.RunJob(context.Background(), jobs[0]); err != nil || res != worker.ResultDead {
		t.Fatalf("%v %v, want dead", res, err)
	}
	if n := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE error_code = 'too_many_attempts'`); n != 1 {
		t.Errorf("%d audit rows, want 1", n)
	}
	if got := e.sandbox.Stats()["twitter"].Refreshes; got != 0 {
		t.Errorf("the platform was called %d times", got)
	}
}

// cancelOnRead cancels once a token endpoint's answer has been read and
// closed.
type cancelOnRead struct {
	next   http.RoundTripper
	cancel context.CancelFunc
}

func (c cancelOnRead) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/oauth2/token") {
		resp.Body = closeHook{resp.Body, c.cancel}
	}
	return resp, err
}

type closeHook struct {
	io.ReadCloser
	after func()
}

func (c closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.after()
	return err
}

// Review finding: a failed background renewal's audit row had no trace
// id (the span lived only inside the platform call).
func TestFailedRenewalAuditRowsCarryTheirTrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.connect("twitter", userID(30))
	e.clock.Advance(110 * time.Minute)
	e.sandbox.SetFault("twitter.token", sandbox.Fault{ErrorRate: 1})
	exp := tracetest.NewInMemoryExporter()
	w := e.workers("w", e.pool, nil)
	w.Refresher.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)).Tracer("test")
	jobs, err := (vault.RefreshQueue{Worker: "w"}).Claim(context.Background(), e.pool, 1, time.Minute, e.clock.Now())
	if err != nil || len(jobs) != 1 {
		t.Fatal(jobs, err)
	}
	if _, res, err := w.RunJob(context.Background(), jobs[0]); err != nil || res != worker.ResultRetry {
		t.Fatalf("%v %v, want a retry", res, err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "credgate.refresh" {
		t.Fatalf("spans: %v", spans)
	}
	if n := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'failed' AND trace_id = $1`,
		spans[0].SpanContext.TraceID().String()); n != 1 {
		t.Error("the failed renewal's audit row does not carry its trace id")
	}
}

// While the app renews its own tokens (app-refresh on, the default),
// credgate never renews them: not from the scheduler, not from a job
// queued before, not from the token API. Two renewers of one X grant
// lose it. Once the operator says the app's refresh is off, a job left
// to the app runs again.
func TestTheAppsRowsAreLeftToTheAppUntilItsRefreshIsOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	u := userID(5)
	g := e.grant("twitter", u)
	pgtest.Exec(t, e.url, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token) VALUES ($1, 'twitter', $2, $3)`,
		u, g.AccessToken.Reveal(), g.RefreshToken.Reveal())
	if _, err := e.accounts.Backfill(ctx, e.pool, vault.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// A job from before the setting existed (or a scheduler that ran
	// before the row was the app's again).
	pgtest.Exec(t, e.url, `INSERT INTO token_refresh_queue (social_account_id, credentials_version, run_at)
		SELECT id, credentials_version, now() FROM social_accounts WHERE user_id = $1`, u)
	run(t, e.workers("w", e.pool, nil))
	waitFor(t, 10*time.Second, "the job left to the app", func() bool {
		return e.scalar(`SELECT count(*) FROM token_refresh_queue WHERE status = 'done' AND last_error = 'app_renews'`) == 1
	})
	// The token API: the app's token, expiry unknown (no expiry column):
	// not vouched for, and not renewed.
	if _, err := e.refresher(e.pool, nil).EnsureFresh(ctx, u, "twitter", 5*time.Minute, "token_api"); !errors.Is(err, worker.ErrExpiryUnknown) {
		t.Fatalf("token API on the app's row: %v, want ErrExpiryUnknown", err)
	}
	if st := e.sandbox.Stats()["twitter"]; st.Refreshes != 0 {
		t.Fatalf("credgate renewed the app's token %d times while the app renews it", st.Refreshes)
	}
	// The operator switches the app's refresh off: the scheduler queues
	// the row again and a worker renews it, writing the app's columns.
	if err := vault.SetSetting(ctx, e.pool, vault.SettingAppRefresh, "off", "test"); err != nil {
		t.Fatal(err)
	}
	if queued, err := worker.ScheduleUnscheduled(ctx, e.pool, e.clock.Now()); err != nil || queued != 1 {
		t.Fatalf("queued %d (%v) after app-refresh off, want 1", queued, err)
	}
	waitFor(t, 10*time.Second, "credgate's renewal", func() bool {
		return e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success'`) == 1
	})
	var plain string
	e.pool.QueryRow(ctx, `SELECT access_token FROM social_accounts WHERE user_id = $1`, u).Scan(&plain)
	if _, c, err := e.accounts.Get(ctx, e.pool, u, "twitter"); err != nil || plain != c.AccessToken.Reveal() || plain == g.AccessToken.Reveal() {
		t.Fatalf("after the renewal the app's column does not hold credgate's new token (%v)", err)
	}
}

// A job whose account's blob does not open dies at once (no retry fixes
// that, a key does), is audited, and is reported through DecryptFailed,
// for the metric an operator alerts on.
func TestAJobWhoseBlobDoesNotOpenIsReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.connect("twitter", userID(21))
	e.clock.Advance(110 * time.Minute)
	pgtest.Exec(t, e.url, `UPDATE social_accounts SET credentials_encrypted = `+pgtest.TamperedBlob)
	w := e.workers("w", e.pool, nil)
	var reported []string
	w.Refresher.DecryptFailed = func(platform string) { reported = append(reported, platform) }
	jobs, err := (vault.RefreshQueue{Worker: "w"}).Claim(context.Background(), e.pool, 1, time.Minute, e.clock.Now())
	if err != nil || len(jobs) != 1 {
		t.Fatal(jobs, err)
	}
	if _, res, err := w.RunJob(context.Background(), jobs[0]); err != nil || res != worker.ResultDead {
		t.Fatalf("%v %v, want dead", res, err)
	}
	if len(reported) != 1 || reported[0] != "twitter" {
		t.Errorf("DecryptFailed saw %v, want [twitter]", reported)
	}
	if n := e.scalar(`SELECT count(*) FROM credential_audit_log WHERE action = 'decrypt_failed'`); n != 1 {
		t.Errorf("%d decrypt_failed audit rows, want 1", n)
	}
}

// Issue 26, item 13: readers of one account in one process share one
// renewal whatever asked for it. A read renewing a token near expiry and
// an egress call renewing the same token after the platform refused it
// took turns at the lease: the loser got the refused token (still within
// its expiry) or 503 renewal_pending, instead of the renewal in flight.
func TestReadersAndARefusalShareOneRenewal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(31)
	e.connect("twitter", u)
	e.clock.Advance(117 * time.Minute) // 3 minutes left: inside min_validity
	_, old, err := e.accounts.Get(context.Background(), e.pool, u, "twitter")
	if err != nil {
		t.Fatal(err)
	}
	// The platform takes its time, so that every caller comes while the
	// renewal is in flight.
	e.sandbox.SetFault("twitter.token", sandbox.Fault{Latency: sandbox.Duration(time.Second)})
	r := e.refresher(pgtest.Pool(t, e.url+"&pool_max_conns=20"), nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]int{}
	for i := range 20 {
		wg.Go(func() {
			var tok worker.Token
			var err error
			if i%2 == 0 {
				tok, err = r.EnsureFresh(context.Background(), u, "twitter", 5*time.Minute, "token_api")
			} else {
				tok, err = r.RenewRejected(context.Background(), u, "twitter", old.AccessToken, "egress")
			}
			key := "a new token"
			switch {
			case err != nil:
				key = err.Error()
			case tok.Credentials.AccessToken.Reveal() == old.AccessToken.Reveal():
				key = "the refused token"
			case tok.RenewalFailed:
				key = "a new token marked as a failed renewal"
			}
			mu.Lock()
			answers[key]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if st := e.sandbox.Stats()["twitter"]; st.Refreshes != 1 || st.RefreshReuse != 0 || answers["a new token"] != 20 {
		t.Fatalf("%d renewals, %d refresh-token reuses, answers %v; want 1, 0 and a new token for all 20", st.Refreshes, st.RefreshReuse, answers)
	}
	e.sandbox.SetFault("twitter.token", sandbox.Fault{})
	if err := e.works(u, "twitter"); err != nil {
		t.Fatal(err)
	}
}
