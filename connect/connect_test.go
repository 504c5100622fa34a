package connect_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/connect"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/flowtest"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

const redirect = "https://app.test/api/auth/oauth/callback"

// env is a migrated database of its own, the platforms' sandbox on real
// HTTP, and the connect steps on both, as a credgate instance builds
// them, with every finished flow recorded.
type env struct {
	t         *testing.T
	url       string
	pool      *pgxpool.Pool
	sandbox   *sandbox.Server
	providers map[string]*oauth.Provider
	flows     *connect.Flows

	mu       sync.Mutex
	outcomes []connect.Outcome
	decrypts []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	f := flowtest.New(t, func(string) string { return redirect })
	e := &env{t: t, url: f.URL, pool: f.Pool, sandbox: f.Sandbox, providers: f.Providers, flows: f.Flows}
	e.flows.Finished = func(o connect.Outcome) { e.mu.Lock(); e.outcomes = append(e.outcomes, o); e.mu.Unlock() }
	e.flows.DecryptFailed = func(during string) {
		e.mu.Lock()
		e.decrypts = append(e.decrypts, during)
		e.mu.Unlock()
	}
	return e
}

// flow is one begun flow: its platform's answer and the browser's
// binding.
type flow struct {
	platform string
	query    url.Values
	binding  secret.Value
}

// begin starts a flow for user on platform and has the sandbox approve
// it, as the browser would: the callback's query comes back unused.
func (e *env) begin(platform, user string) flow {
	e.t.Helper()
	started, err := e.flows.Begin(context.Background(), e.providers[platform], user, "/settings?tab=accounts", 10*time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	loc := flowtest.Authorize(e.t, started.URL, user)
	return flow{platform: platform, query: loc.Query(), binding: started.Binding}
}

// finish brings the flow's callback back from the browser that began it,
// signed in as signedIn.
func (e *env) finish(f flow, signedIn string) connect.Result {
	return e.flows.Finish(context.Background(), connect.Callback{Provider: e.providers[f.platform], State: f.query.Get("state"),
		Query: f.query, Binding: f.binding, SignedIn: signedIn})
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) lastOutcome() connect.Outcome {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.outcomes) == 0 {
		e.t.Fatal("no flow was counted as finished")
	}
	return e.outcomes[len(e.outcomes)-1]
}

func user(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

func TestAConnectStoresTheTokensWithTheirRenewalAndAuditRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	res := e.finish(e.begin("twitter", alice), alice)
	if res.Kind != connect.Connected || res.ReturnTo != "/settings?tab=accounts" || !res.ClearBinding {
		t.Fatalf("result %+v, want connected back to the return path with the binding cleared", res)
	}
	acct, creds, err := e.flows.Accounts.Get(context.Background(), e.pool, alice, "twitter")
	if err != nil {
		t.Fatal(err)
	}
	if creds.AccessToken.IsZero() || creds.RefreshToken.IsZero() || acct.ConnectedVia != vault.ViaCredgate {
		t.Errorf("stored account %+v: want both tokens, connected via credgate", acct)
	}
	if n := e.count(`SELECT count(*) FROM token_refresh_queue WHERE social_account_id = $1 AND status = 'pending'`, acct.ID); n != 1 {
		t.Errorf("%d pending renewals for the new account, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 AND platform = 'twitter' AND flow = 'new'
		AND ((action = 'oauth_start' AND status = 'success') OR (action = 'connect' AND status = 'success' AND details->>'account_id' = $2))`, alice, acct.ID); n != 2 {
		t.Errorf("%d of the start's and the connect's audit rows, want 2", n)
	}
	if o := e.lastOutcome(); o != (connect.Outcome{Arm: flags.ArmNew, Platform: "twitter", UserID: alice, Took: o.Took}) {
		t.Errorf("finished %+v, want a success on the new arm", o)
	}
	if s := e.sandbox.Stats()["twitter"]; s.CodesRedeemed != 1 {
		t.Errorf("the platform redeemed %d codes, want 1", s.CodesRedeemed)
	}
}

func TestAStateFinishesOneFlowOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	f := e.begin("linkedin", alice)
	if res := e.finish(f, alice); res.Kind != connect.Connected {
		t.Fatalf("first callback: %+v", res)
	}
	res := e.finish(f, alice)
	if res.Kind != connect.Refused || res.Code != "invalid_state" || res.ClearBinding {
		t.Fatalf("the same callback again: %+v, want refused invalid_state", res)
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed'
		AND error_code = 'invalid_state' AND details->>'reason' = 'unknown_or_used'`); n != 1 {
		t.Errorf("%d audit rows for the reused state, want 1", n)
	}
	if s := e.sandbox.Stats()["linkedin"]; s.CodesRedeemed != 1 {
		t.Errorf("the platform was asked to redeem %d codes, want 1", s.CodesRedeemed)
	}
}

func TestACallbackAnotherBrowserUserOrPlatformBringsIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice, mallory := user(1), user(2)
	cases := []struct {
		reason string
		change func(f *flow) string // returns the signed-in user
	}{
		{"browser", func(f *flow) string { f.binding = secret.New("another-browsers-binding"); return alice }},
		{"user", func(f *flow) string { return mallory }},
		{"platform", func(f *flow) string { f.platform = "facebook"; return alice }},
	}
	for _, c := range cases {
		f := e.begin("twitter", alice)
		signedIn := c.change(&f)
		res := e.finish(f, signedIn)
		if res.Kind != connect.Refused || res.Code != "state_mismatch" {
			t.Errorf("%s: %+v, want refused state_mismatch", c.reason, res)
		}
		if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed' AND user_id = $1
			AND error_code = 'state_mismatch' AND details->>'reason' = $2`, alice, c.reason); n != 1 {
			t.Errorf("%s: %d audit rows, want 1", c.reason, n)
		}
	}
	if s := e.sandbox.Stats(); s["twitter"].CodesRedeemed+s["facebook"].CodesRedeemed != 0 {
		t.Errorf("a refused callback's code was redeemed: %+v", s)
	}
	if n := e.count(`SELECT count(*) FROM social_accounts`); n != 0 {
		t.Errorf("%d accounts stored by refused callbacks", n)
	}
}

// A state credgate did not issue is refused by its MAC alone: junk on the
// callback route never reaches the database, even one that is gone.
func TestAStateCredgateDidNotIssueIsRefusedWithoutTheDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pool.Close()
	for _, state := range []string{"", "forged", e.flows.Keys.IssueState().Reveal() + "x"} {
		res := e.flows.Finish(context.Background(), connect.Callback{Provider: e.providers["twitter"], State: state, Query: url.Values{"state": {state}, "code": {"c"}}})
		if res.Kind != connect.Refused || res.Code != "invalid_state" {
			t.Errorf("state %q: %+v, want refused invalid_state", state, res)
		}
	}
	// A state credgate did issue goes on to the database, which is gone.
	res := e.flows.Finish(context.Background(), connect.Callback{Provider: e.providers["twitter"], State: e.flows.Keys.IssueState().Reveal()})
	if res.Kind != connect.Unavailable || res.Err == nil {
		t.Errorf("an issued state with the database gone: %+v, want unavailable", res)
	}
}

func TestADeclineOrARefusedCodeEndsTheFlowAsTheUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	declined := e.begin("facebook", alice)
	declined.query = url.Values{"state": {declined.query.Get("state")}, "error": {"access_denied"}}
	res := e.finish(declined, alice)
	if res.Kind != connect.Failed || res.Code != string(oauth.CodeAccessDenied) || res.ReturnTo != "/settings?tab=accounts" {
		t.Fatalf("declined: %+v", res)
	}
	if o := e.lastOutcome(); o.Code != string(oauth.CodeAccessDenied) || !o.UserCaused {
		t.Errorf("declined counted as %+v, want access_denied, user-caused", o)
	}
	forged := e.begin("facebook", alice)
	forged.query.Set("code", "a-code-the-platform-never-issued")
	res = e.finish(forged, alice)
	if res.Kind != connect.Failed || res.Code != string(oauth.CodeInvalidGrant) {
		t.Fatalf("forged code: %+v, want failed invalid_grant", res)
	}
	if o := e.lastOutcome(); !o.UserCaused {
		t.Errorf("a code the platform refused counted as %+v, want user-caused", o)
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed' AND user_id = $1
		AND flow = 'new' AND error_code IN ('access_denied', 'invalid_grant')`, alice); n != 2 {
		t.Errorf("%d audit rows for the two failed flows, want 2", n)
	}
}

// Tokens the platform issued but credgate cannot store are withdrawn at
// the platform, and the failure is audited and counted.
func TestTokensThatCannotBeStoredAreRevokedAndAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	f := e.begin("twitter", alice)
	// After the platform answered, a failure no retry fixes: the table
	// is gone.
	e.flows.Renewals = &beforeStore{Renewals: e.flows.Renewals, do: func() {
		pgtest.Exec(t, e.url, `ALTER TABLE social_accounts RENAME TO social_accounts_away`)
	}}
	res := e.finish(f, alice)
	pgtest.Exec(t, e.url, `ALTER TABLE social_accounts_away RENAME TO social_accounts`)
	if res.Kind != connect.Failed || res.Code != "storage_unavailable" {
		t.Fatalf("%+v, want failed storage_unavailable", res)
	}
	if s := e.sandbox.Stats()["twitter"]; s.TokensIssued != 1 || s.Revocations != 1 {
		t.Errorf("the platform issued %d tokens and revoked %d, want 1 and 1", s.TokensIssued, s.Revocations)
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed' AND user_id = $1
		AND error_code = 'storage_unavailable' AND (details->>'issued_token_revoked')::boolean`, alice); n != 1 {
		t.Errorf("%d audit rows for the withdrawn grant, want 1", n)
	}
	if o := e.lastOutcome(); o.Code != "storage_unavailable" || o.UserCaused {
		t.Errorf("counted as %+v, want storage_unavailable, not the user's", o)
	}
}

// A database that restarts right after the platform issued the tokens
// is waited for: the connect completes when it is back, and nothing is
// revoked.
func TestAConnectWaitsOutADatabaseRestartAfterTheExchange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxy := pgtest.NewServerProxy(t)
	proxy.Up(t)
	e.flows.DB = pgtest.Pool(t, proxy.Via(t, e.url))
	alice := user(1)
	f := e.begin("twitter", alice)
	down := make(chan struct{})
	e.flows.Renewals = &beforeStore{Renewals: e.flows.Renewals, do: func() { proxy.Down(); close(down) }}
	done := make(chan connect.Result, 1)
	go func() { done <- e.finish(f, alice) }()
	<-down
	time.Sleep(time.Second)
	proxy.Up(t)
	if res := <-done; res.Kind != connect.Connected {
		t.Fatalf("%+v, want connected once the database was back", res)
	}
	if n := e.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND credentials_encrypted IS NOT NULL`, alice); n != 1 {
		t.Errorf("%d stored accounts, want 1", n)
	}
	if s := e.sandbox.Stats()["twitter"]; s.TokensIssued != 1 || s.Revocations != 0 {
		t.Errorf("the platform issued %d tokens and revoked %d, want 1 and 0", s.TokensIssued, s.Revocations)
	}
}

// beforeStore runs do once, when the store asks for the new account's
// renewal time: after the platform answered, just before the write.
type beforeStore struct {
	connect.Renewals
	do   func()
	once sync.Once
}

func (b *beforeStore) ConnectedJobAt(p *oauth.Provider, c vault.Credentials) (time.Time, bool) {
	b.once.Do(b.do)
	return b.Renewals.ConnectedJobAt(p, c)
}

func TestADisconnectRevokesThenWipes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	if res := e.finish(e.begin("twitter", alice), alice); res.Kind != connect.Connected {
		t.Fatalf("connect: %+v", res)
	}
	revoked, err := e.flows.Disconnect(context.Background(), e.providers["twitter"], alice)
	if err != nil || !revoked {
		t.Fatalf("disconnect: revoked %v, %v", revoked, err)
	}
	if n := e.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND status = 'disconnected' AND credentials_encrypted IS NULL`, alice); n != 1 {
		t.Errorf("%d wiped accounts, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM token_refresh_queue WHERE status IN ('pending', 'running')`); n != 0 {
		t.Errorf("%d renewals still open", n)
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 AND status = 'success'
		AND action IN ('revoke', 'disconnect')`, alice); n != 2 {
		t.Errorf("%d revoke and disconnect audit rows, want 2", n)
	}
	if s := e.sandbox.Stats()["twitter"]; s.Revocations != 1 {
		t.Errorf("%d revocations at the platform, want 1", s.Revocations)
	}
	if _, err := e.flows.Disconnect(context.Background(), e.providers["twitter"], alice); !errors.Is(err, vault.ErrNotConnected) {
		t.Errorf("disconnecting again: %v, want ErrNotConnected", err)
	}
}

// Credentials that no longer open do not keep a user connected: they are
// wiped unrevoked, and the record says so.
func TestADisconnectWipesCredentialsThatDoNotOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	if res := e.finish(e.begin("linkedin", alice), alice); res.Kind != connect.Connected {
		t.Fatalf("connect: %+v", res)
	}
	pgtest.Exec(t, e.url, `UPDATE social_accounts SET credentials_encrypted = set_byte(credentials_encrypted, 20, get_byte(credentials_encrypted, 20) # 1)`)
	revoked, err := e.flows.Disconnect(context.Background(), e.providers["linkedin"], alice)
	if err != nil || revoked {
		t.Fatalf("disconnect: revoked %v, %v; want wiped, not revoked", revoked, err)
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 AND action = 'decrypt_failed'
		AND details->>'during' = 'disconnect'`, alice); n != 1 {
		t.Errorf("%d decrypt_failed audit rows, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND status = 'disconnected'`, alice); n != 1 {
		t.Errorf("%d wiped accounts, want 1", n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.decrypts) != 1 || e.decrypts[0] != "disconnect" {
		t.Errorf("decrypt failures reported: %v", e.decrypts)
	}
}

func TestALegacyFlowIsCountedOnceIfCredgateSawItBegin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	if err := vault.RecordLegacyFlow(context.Background(), e.pool, "app-state-1", "twitter", alice); err != nil {
		t.Fatal(err)
	}
	if e.flows.CountLegacy(context.Background(), "twitter", "app-state-unknown", "", false) {
		t.Error("a flow credgate did not see begin was counted")
	}
	if !e.flows.CountLegacy(context.Background(), "twitter", "app-state-1", "app_http_5xx", false) {
		t.Fatal("the flow credgate saw begin was not counted")
	}
	if e.flows.CountLegacy(context.Background(), "twitter", "app-state-1", "", false) {
		t.Error("the same flow was counted twice")
	}
	if o := e.lastOutcome(); o.Arm != flags.ArmLegacy || o.Code != "app_http_5xx" || o.UserID != alice {
		t.Errorf("counted %+v", o)
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 AND flow = 'legacy' AND action = 'connect'
		AND status = 'failed' AND error_code = 'app_http_5xx'`, alice); n != 1 {
		t.Errorf("%d legacy audit rows, want 1", n)
	}
}

// A row the database cannot take now is written when it answers again.
func TestAnAuditRowWaitsForTheDatabase(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	proxy := pgtest.NewServerProxy(t)
	proxy.Up(t)
	pool := pgtest.Pool(t, proxy.Via(t, url))
	a := connect.NewAuditor(pool, nil)
	alice := user(1)
	proxy.Down()
	a.RecordEventually(vault.Event{UserID: alice, Platform: "twitter", Action: vault.ActionConnect, Status: vault.Failed, ErrorCode: "storage_unavailable"})
	time.Sleep(500 * time.Millisecond)
	proxy.Up(t)
	if !a.Wait(30 * time.Second) {
		t.Fatal("the row was still being retried after 30s")
	}
	var n int
	if err := pgtest.Pool(t, url).QueryRow(context.Background(), `SELECT count(*) FROM credential_audit_log WHERE user_id = $1`, alice).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d rows (%v), want 1", n, err)
	}
}

// The health check reports what a token read would find: a blob that
// does not open is undecryptable and needs the user, recorded once
// however often the page polls.
func TestHealthReportsWhatATokenReadWouldFind(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := user(1)
	if res := e.finish(e.begin("twitter", alice), alice); res.Kind != connect.Connected {
		t.Fatalf("connect: %+v", res)
	}
	list, err := e.flows.Health(context.Background(), alice, time.Now())
	if err != nil || len(list) != 1 {
		t.Fatalf("health: %+v %v", list, err)
	}
	if h := list[0]; h.Platform != "twitter" || h.Status != "connected" || h.NeedsReauth || h.SecondsToExpiry == nil || *h.SecondsToExpiry <= 0 {
		t.Errorf("a fresh account: %+v", h)
	}
	pgtest.Exec(t, e.url, `UPDATE social_accounts SET credentials_encrypted = set_byte(credentials_encrypted, 20, get_byte(credentials_encrypted, 20) # 1)`)
	for range 3 {
		list, err = e.flows.Health(context.Background(), alice, time.Now())
		if err != nil || len(list) != 1 || list[0].Status != connect.StatusUndecryptable || !list[0].NeedsReauth {
			t.Fatalf("an account that does not open: %+v %v", list, err)
		}
	}
	if n := e.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 AND action = 'decrypt_failed'
		AND details->>'during' = 'health_check'`, alice); n != 1 {
		t.Errorf("%d decrypt_failed rows after three checks, want 1", n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.decrypts) != 1 || e.decrypts[0] != "health_check" {
		t.Errorf("decrypt failures reported: %v", e.decrypts)
	}
}
