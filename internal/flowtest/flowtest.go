// Package flowtest builds what the core packages' tests of a whole flow
// share: a migrated PostgreSQL database of the test's own, the platforms'
// sandbox on real HTTP with a client for each platform, and the connect
// steps on both, as a credgate instance builds them, without Caddy.
package flowtest

import (
	"context"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/connect"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Env is one test's database, sandbox and connect steps.
type Env struct {
	// URL is the database's; Pool a pool of its own on it.
	URL       string
	Pool      *pgxpool.Pool
	Keys      *vault.Keyring
	Accounts  *vault.Accounts
	Sandbox   *sandbox.Server
	Providers map[string]*oauth.Provider
	Refresher *worker.Refresher
	Flows     *connect.Flows
}

// scopes are what a connect asks each platform for: enough to read the
// user and to post, so that egress's calls are allowed.
var scopes = map[string][]string{
	"twitter":   {"tweet.read", "tweet.write", "users.read", "offline.access"},
	"linkedin":  {"openid", "profile", "w_member_social"},
	"facebook":  {"public_profile", "pages_manage_posts"},
	"instagram": {"instagram_business_basic", "instagram_business_content_publish"},
}

// New builds an Env whose platforms send the browser back to
// callback(platform); configure may change the pool's config first (a
// query tracer).
func New(t testing.TB, callback func(platform string) string, configure ...func(*pgxpool.Config)) *Env {
	t.Helper()
	e := &Env{URL: pgtest.Database(t)}
	e.Pool = pgtest.Pool(t, e.URL, configure...)
	var err error
	if e.Keys, err = vault.NewKeyring(vault.KeyConfig{MasterKey: vault.NewMasterKey()}); err != nil {
		t.Fatal(err)
	}
	e.Accounts = vault.NewAccounts(e.Keys)
	e.Accounts.UseSettings(&vault.SettingsCache{DB: e.Pool, TTL: time.Nanosecond})
	apps := []sandbox.App{}
	for _, p := range sandbox.Platforms {
		apps = append(apps, sandbox.App{Platform: p, ClientID: p + "-id", ClientSecret: p + "-secret", RedirectURIs: []string{callback(p)}})
	}
	e.Sandbox = sandbox.New(sandbox.Config{AutoApprove: true, Apps: apps})
	srv := httptest.NewServer(e.Sandbox)
	t.Cleanup(srv.Close)
	e.Providers = map[string]*oauth.Provider{}
	for _, name := range sandbox.Platforms {
		auth, token, api, err := oauth.SandboxURLs(name, srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		p, err := oauth.New(name, oauth.Config{ClientID: name + "-id", ClientSecret: secret.New(name + "-secret"),
			RedirectURL: callback(name), Scopes: scopes[name], AuthURL: auth, TokenURL: token, APIBase: api, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		e.Providers[name] = p
	}
	e.Refresher = &worker.Refresher{DB: e.Pool, Accounts: e.Accounts, Providers: e.Providers}
	e.Flows = &connect.Flows{DB: e.Pool, Keys: e.Keys, States: vault.NewStates(e.Keys), Accounts: e.Accounts,
		Renewals: e.Refresher, Audit: connect.NewAuditor(e.Pool, nil)}
	return e
}

// Authorize has the sandbox approve the flow that starts at authorizeURL
// for user, as the browser would, and returns the callback URL the
// platform sends the browser back to.
func Authorize(t testing.TB, authorizeURL, user string) *url.URL {
	t.Helper()
	resp, err := testhttp.NoRedirects().Get(authorizeURL + "&sandbox_user=" + url.QueryEscape(user))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("the sandbox's answer to the authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc
}

// Connect connects user's account on platform through the connect
// steps, and fails the test unless it is stored.
func (e *Env) Connect(t testing.TB, user, platform string) {
	t.Helper()
	p := e.Providers[platform]
	started, err := e.Flows.Begin(context.Background(), p, user, "/", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cb := Authorize(t, started.URL, user)
	res := e.Flows.Finish(context.Background(), connect.Callback{Provider: p, State: cb.Query().Get("state"), Query: cb.Query(),
		Binding: started.Binding, SignedIn: user})
	if res.Kind != connect.Connected {
		t.Fatalf("connecting %s on %s: %+v", user, platform, res)
	}
}
