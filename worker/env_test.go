package worker_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

const redirect = "http://app.test/api/auth/oauth/cb"

// env is a migrated database of its own, the provider sandbox on real
// HTTP, and credgate's stores and providers, all on the sandbox's movable
// clock: the clock credgate and the platforms share.
type env struct {
	t          testing.TB
	url        string
	pool       *pgxpool.Pool
	keys       *vault.Keyring
	accounts   *vault.Accounts
	sandbox    *sandbox.Server
	sandboxURL string
	clock      *sandbox.Clock
	providers  map[string]*oauth.Provider
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvAt(t, pgtest.Database(t))
}

// newEnvAt is newEnv on a migrated database of the caller's (a
// throwaway cluster's).
func newEnvAt(t testing.TB, url string) *env {
	t.Helper()
	e := &env{t: t, url: url, clock: &sandbox.Clock{}}
	defer e.dumpOnFailure()
	e.pool = pgtest.Pool(t, e.url)
	var err error
	e.keys, err = vault.NewKeyring(vault.KeyConfig{MasterKey: vault.NewMasterKey()})
	if err != nil {
		t.Fatal(err)
	}
	e.accounts = vault.NewAccounts(e.keys)
	// The settings as a running instance reads them, but at once.
	e.accounts.UseSettings(&vault.SettingsCache{DB: e.pool, TTL: time.Nanosecond})
	apps := []sandbox.App{}
	for _, p := range sandbox.Platforms {
		apps = append(apps, sandbox.App{Platform: p, ClientID: p + "-id", ClientSecret: p + "-secret", RedirectURIs: []string{redirect}})
	}
	// A second LinkedIn app approved for refresh tokens.
	apps = append(apps, sandbox.App{Platform: "linkedin", ClientID: "linkedin-partner", ClientSecret: "linkedin-secret",
		RedirectURIs: []string{redirect}, RefreshTokens: true})
	e.sandbox = sandbox.New(sandbox.Config{AutoApprove: true, Apps: apps, Clock: e.clock})
	srv := httptest.NewServer(e.sandbox)
	t.Cleanup(srv.Close)
	e.sandboxURL = srv.URL
	e.providers = map[string]*oauth.Provider{}
	for _, p := range sandbox.Platforms {
		e.providers[p] = e.provider(srv.URL, p, p+"-id", p+"-secret")
	}
	e.providers["linkedin-partner"] = e.provider(srv.URL, "linkedin", "linkedin-partner", "linkedin-secret")
	return e
}

func (e *env) provider(base, platform, id, secretValue string) *oauth.Provider {
	auth, token, api, err := oauth.SandboxURLs(platform, base)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := oauth.New(platform, oauth.Config{ClientID: id, ClientSecret: secret.New(secretValue), RedirectURL: redirect,
		AuthURL: auth, TokenURL: token, APIBase: api, Now: e.clock.Now, Timeout: 5 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// refresher is what one credgate instance builds, on its own pool.
func (e *env) refresher(pool *pgxpool.Pool, providers map[string]*oauth.Provider) *worker.Refresher {
	if providers == nil {
		providers = map[string]*oauth.Provider{}
		for _, p := range sandbox.Platforms {
			providers[p] = e.providers[p]
		}
	}
	return &worker.Refresher{DB: pool, Accounts: e.accounts, Providers: providers, Now: e.clock.Now}
}

// workers is one instance's worker pool with test-sized timings.
func (e *env) workers(name string, pool *pgxpool.Pool, providers map[string]*oauth.Provider) *worker.Workers {
	return &worker.Workers{Refresher: e.refresher(pool, providers), N: 4, Name: name, Lease: time.Minute,
		Poll: 20 * time.Millisecond, Backoff: vault.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond, MaxAttempts: 4}}
}

// run starts w until the test (or stop) ends.
func run(t *testing.T, w *worker.Workers) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx, ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// grant runs a whole authorization-code flow at the sandbox for user on
// provider key (a platform, or "linkedin-partner") and returns the token
// set, without storing it (what the legacy app's own connect does).
func (e *env) grant(key, user string) oauth.TokenSet {
	e.t.Helper()
	p := e.providers[key]
	start, err := p.Begin()
	if err != nil {
		e.t.Fatal(err)
	}
	client := testhttp.NoRedirects()
	resp, err := client.Get(start.URL + "&sandbox_user=" + url.QueryEscape(user))
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		e.t.Fatalf("authorize for %s: %d %q", key, resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := p.Complete(context.Background(), secret.New(loc.Query().Get("code")), start.Verifier)
	if err != nil {
		e.t.Fatalf("exchange for %s: %v", key, err)
	}
	return tok
}

// connect runs grant and stores the result as the connect route does:
// the account and its first refresh job.
func (e *env) connect(key, user string) vault.Account {
	e.t.Helper()
	p := e.providers[key]
	tok := e.grant(key, user)
	ctx := context.Background()
	creds := vault.Credentials{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType,
		Expiry: tok.Expiry, IssuedAt: tok.IssuedAt}
	acct, err := e.accounts.Upsert(ctx, e.pool, vault.Connection{UserID: user, Platform: p.Name(), PlatformUserID: tok.PlatformUserID,
		Username: tok.Username, Credentials: creds, Scopes: tok.Scopes})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.refresher(e.pool, map[string]*oauth.Provider{p.Name(): p}).Schedule(ctx, e.pool, p, acct, creds); err != nil {
		e.t.Fatal(err)
	}
	return acct
}

// connectMany connects n users on key in parallel and returns their ids.
func (e *env) connectMany(key string, n int) []string {
	users := make([]string, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				users[i] = userID(i)
				e.connect(key, users[i])
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return users
}

func userID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

// scalar reads one number.
func (e *env) scalar(sql string, args ...any) int64 {
	e.t.Helper()
	var n int64
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitReports waits up to 5 s for the workers' reports (OnResult) to
// add up to want: a job's end is committed before its worker reports it,
// so the queue may read settled while the last reports are on their way.
// The caller asserts the count.
func awaitReports(total func() int64, want int64) {
	for deadline := time.Now().Add(5 * time.Second); total() < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// settled reports whether no refresh job is due or running at the
// sandbox's now.
func (e *env) settled() bool {
	st, err := vault.ReadQueueStats(context.Background(), e.pool, e.clock.Now(), 0)
	if err != nil || st.Due != 0 || st.Running != 0 {
		return false
	}
	// A renewal in flight, or a store being retried after a fault, holds
	// its account's lease; the jobs it put off are not due yet.
	var leased int
	err = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM renewal_leases WHERE until > now()`).Scan(&leased)
	return err == nil && leased == 0
}

// works checks that the stored access token of (user, platform) is one
// the platform accepts now: its profile endpoint answers.
func (e *env) works(user, key string) error {
	p := e.providers[key]
	_, c, err := e.accounts.Get(context.Background(), e.pool, user, p.Name())
	if err != nil {
		return err
	}
	if _, err := p.Identify(context.Background(), c.AccessToken); err != nil {
		return fmt.Errorf("the stored token of %s on %s is not current: %w", user, key, err)
	}
	return nil
}

func pgxConfig(url string) (*pgx.ConnConfig, error) { return pgx.ParseConfig(url) }

// dumpOnFailure logs the audit counts, the jobs and the sandbox's view
// when the test fails, which is most of what a failing refresh test
// needs to be understood.
func (e *env) dumpOnFailure() {
	e.t.Cleanup(func() {
		if !e.t.Failed() {
			return
		}
		ctx := context.Background()
		rows, err := e.pool.Query(ctx, `SELECT action || ' ' || status || ' ' || coalesce(error_code, '') || ': ' || count(*)
			FROM credential_audit_log GROUP BY action, status, error_code`)
		if err == nil {
			lines, _ := pgx.CollectRows(rows, pgx.RowTo[string])
			e.t.Logf("audit: %v", lines)
		}
		rows, err = e.pool.Query(ctx, `SELECT status || ' attempts=' || attempts || ' ' || coalesce(last_error, '') || ': ' || count(*)
			FROM token_refresh_queue GROUP BY status, attempts, last_error`)
		if err == nil {
			lines, _ := pgx.CollectRows(rows, pgx.RowTo[string])
			e.t.Logf("jobs: %v", lines)
		}
		e.t.Logf("sandbox: %+v, clock %v", e.sandbox.Stats(), e.clock.Now())
	})
}
