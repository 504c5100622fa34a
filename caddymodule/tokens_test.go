package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

const serviceToken = "service-token-for-tests-0123456789"

// tokenResponse is the token API's answer.
type tokenResponse struct {
	AccessToken    string    `json:"access_token"`
	TokenType      string    `json:"token_type"`
	ExpiresAt      time.Time `json:"expires_at"`
	PlatformUserID string    `json:"platform_user_id"`
	Scopes         []string  `json:"scopes"`
}

// fetchToken calls the token API as the app's back end does.
func (h *harness) fetchToken(base, user, platform, bearer string) (int, tokenResponse, []byte) {
	h.t.Helper()
	headers := map[string]string{}
	if bearer != "" {
		headers["Authorization"] = "Bearer " + bearer
	}
	resp, body := h.do("GET", base+"/api/internal/credentials/"+user+"/"+platform+"/token", "", headers)
	var tok tokenResponse
	json.Unmarshal(body, &tok)
	return resp.StatusCode, tok, body
}

// worksAtSandbox reports whether the platform accepts access now.
func (h *harness) worksAtSandbox(platform, access string) bool {
	h.t.Helper()
	auth, tokenURL, api, _ := oauth.SandboxURLs(platform, h.sbURL)
	p, err := oauth.New(platform, oauth.Config{ClientID: platform + "-client-id", ClientSecret: secret.New("x"),
		RedirectURL: "http://unused", AuthURL: auth, TokenURL: tokenURL, APIBase: api})
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = p.Identify(context.Background(), secret.New(access))
	return err == nil
}

func TestTokenAPI(t *testing.T) {
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken + "\n\t\tmin_validity 5m"})
	h.connect(alice, "twitter")
	h.connect(alice, "linkedin")

	// The service token is required, and compared exactly.
	for _, bearer := range []string{"", "wrong", serviceToken + "x", strings.ToUpper(serviceToken)} {
		if code, _, body := h.fetchToken(h.internal, alice, "twitter", bearer); code != http.StatusUnauthorized || errorCode(body) != "unauthorized" {
			t.Errorf("bearer %q: %d %s, want 401 unauthorized", bearer, code, body)
		}
	}
	// The public origin has no such route, whatever the token.
	if code, _, body := h.fetchToken(h.origin, alice, "twitter", serviceToken); code != http.StatusNotFound || strings.Contains(string(body), "access_token") {
		t.Errorf("public origin: %d %s, want 404", code, body)
	}
	if len(h.upstreamSaw()) != 0 {
		t.Errorf("the token route reached the app: %+v", h.upstreamSaw())
	}

	code, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || tok.AccessToken == "" || tok.TokenType != "bearer" || tok.PlatformUserID == "" || len(tok.Scopes) == 0 {
		t.Fatalf("token: %d %s", code, body)
	}
	if d := time.Until(tok.ExpiresAt); d < 110*time.Minute || d > 2*time.Hour {
		t.Errorf("expires in %v, want about 2h", d)
	}
	if !h.worksAtSandbox("twitter", tok.AccessToken) {
		t.Error("the returned token does not work at the platform")
	}
	// Counted, and written with the window's other reads.
	h.flushReadAudit()
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'token_read' AND status = 'success' AND events = 1`); n != 1 {
		t.Errorf("%d token_read audit rows, want 1", n)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE details::text LIKE '%' || $1 || '%'`, tok.AccessToken); n != 0 {
		t.Error("the token is in the audit log")
	}

	for _, tc := range []struct {
		user, platform string
		status         int
		code           string
	}{
		{bob, "twitter", http.StatusNotFound, "not_connected"},
		{alice, "myspace", http.StatusNotFound, "unknown_platform"},
		{"not-a-uuid", "twitter", http.StatusBadRequest, "invalid_user"},
		// Forms uuid.Parse accepts and PostgreSQL does not are read canonically.
		{"urn:uuid:" + bob, "twitter", http.StatusNotFound, "not_connected"},
		{"{" + bob + "}", "twitter", http.StatusNotFound, "not_connected"},
	} {
		if code, _, body := h.fetchToken(h.internal, tc.user, tc.platform, serviceToken); code != tc.status || errorCode(body) != tc.code {
			t.Errorf("%s/%s: %d %s, want %d %s", tc.user, tc.platform, code, body, tc.status, tc.code)
		}
	}

	// Near expiry the route renews first; fifty calls at once cause one
	// renewal and get the same token.
	before := h.sandbox.Stats()["twitter"].Refreshes
	h.sandbox.Clock().Advance(117 * time.Minute)
	seen := h.readConcurrently(50, alice, "twitter")
	st := h.sandbox.Stats()["twitter"]
	if st.Refreshes-before != 1 || st.RefreshReuse != 0 || len(seen) != 1 {
		t.Fatalf("50 concurrent calls near expiry: %d renewals, %d reuse, answers %v; want 1, 0 and one token", st.Refreshes-before, st.RefreshReuse, seen)
	}
	for k := range seen {
		if !strings.HasSuffix(k, "/200 OK") || !h.worksAtSandbox("twitter", strings.TrimSuffix(k, "/200 OK")) {
			t.Errorf("answer %q is not a working token", k)
		}
	}

	// A dead grant is 409 needs_reauth.
	h.sandbox.SetFault("twitter.token", sandbox.Fault{InvalidGrant: true})
	h.sandbox.Clock().Advance(2 * time.Hour)
	if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusConflict || errorCode(body) != "needs_reauth" {
		t.Errorf("after invalid_grant: %d %s, want 409 needs_reauth", code, body)
	}
}

// The migration guide's promise for the new flow, end to end: a Twitter
// account connected through credgate still yields a working token from
// the token API three token lifetimes later, renewed in the background by
// the refresh workers on the clock credgate shares with the platform.
func TestTwitterTokenStillWorksThreeLifetimesLater(t *testing.T) {
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken})
	h.connect(alice, "twitter")
	for cycle := 1; cycle <= 3; cycle++ {
		h.sandbox.Clock().Advance(2 * time.Hour)
		// Generous: an idle worker whose claims failed under load backs
		// off up to 30 s, and `make test` runs the fault tests beside
		// this one; the state is printed if it still waits in vain.
		// The renewal is done when credgate has stored it (its audit row
		// is in the same transaction), not when the sandbox answered:
		// moving the shared clock in between would date the new token's
		// expiry from the moved clock, and the next renewal would be due
		// two hours late (it failed so in CI, under load).
		deadline := time.Now().Add(150 * time.Second)
		for h.sandbox.Stats()["twitter"].Refreshes < cycle ||
			h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success'`) < cycle {
			if time.Now().After(deadline) {
				t.Fatalf("cycle %d: no renewal within 150 s; %s", cycle, h.refreshState())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	code, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || !h.worksAtSandbox("twitter", tok.AccessToken) {
		t.Fatalf("after three lifetimes: %d %s, or the token does not work", code, body)
	}
	st := h.sandbox.Stats()["twitter"]
	if st.Refreshes != 3 || st.RefreshReuse != 0 {
		t.Errorf("%d renewals and %d reused refresh tokens, want 3 background renewals and 0", st.Refreshes, st.RefreshReuse)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND status = 'success' AND details->>'trigger' = 'refresh_worker'`); n != 3 {
		t.Errorf("%d background refresh audit rows, want 3", n)
	}
	// The health route tells the truth about it.
	resp, body := h.do("GET", "/api/credentials/health-check", alice, nil)
	var health struct {
		Accounts []healthView `json:"accounts"`
	}
	json.Unmarshal(body, &health)
	if resp.StatusCode != http.StatusOK || len(health.Accounts) != 1 || health.Accounts[0].LastRefresh == nil ||
		*health.Accounts[0].LastRefresh != "success" || health.Accounts[0].LastRefreshedAt == nil || health.Accounts[0].NeedsReauth {
		t.Errorf("health-check: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
	var service struct {
		Queue map[string]any `json:"refresh_queue"`
	}
	json.Unmarshal(body, &service)
	if resp.StatusCode != http.StatusOK || service.Queue["pending"] != float64(1) || service.Queue["overdue"] != float64(0) || service.Queue["dead"] != float64(0) {
		t.Errorf("service-health: %d %s", resp.StatusCode, body)
	}
}

// refreshState describes the refresh jobs and renewal leases, for a test
// that waited in vain for a renewal.
func (h *harness) refreshState() string {
	h.t.Helper()
	pool := pgtest.Pool(h.t, h.db)
	var out strings.Builder
	rows, err := pool.Query(context.Background(), `SELECT status || ' attempts=' || attempts || ' run_at=' || run_at::text || ' locked_by=' || coalesce(locked_by, '-') ||
		' locked_until=' || coalesce(locked_until::text, '-') || ' error=' || coalesce(last_error, '-') FROM token_refresh_queue ORDER BY id`)
	if err == nil {
		for rows.Next() {
			var line string
			rows.Scan(&line)
			out.WriteString("job: " + line + "; ")
		}
		rows.Close()
	}
	rows, err = pool.Query(context.Background(), `SELECT owner || ' until=' || until::text || ' answered=' || coalesce(answered_at::text, '-') FROM renewal_leases`)
	if err == nil {
		for rows.Next() {
			var line string
			rows.Scan(&line)
			out.WriteString("lease: " + line + "; ")
		}
		rows.Close()
	}
	fmt.Fprintf(&out, "credgate's clock %s, database now checked at %s", currentApp(h.t).now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
	return out.String()
}

// The token API never vouches for an app token it cannot: a row the app
// owns is served only while the app's expiry column says it is alive,
// and never renewed while the app renews it itself (app-refresh on).
// The newest token wins: one the app wrote after credgate's is served.
func TestTokenAPIOnTheAppsOwnTokens(t *testing.T) {
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken + "\n\t\tserve_legacy_plaintext"})
	ctx := context.Background()
	pgtest.Exec(t, h.db, `ALTER TABLE social_accounts ADD COLUMN token_expires_at timestamptz`)
	pgtest.Exec(t, h.db, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token, token_expires_at)
		VALUES ($1, 'twitter', 'app-live', 'app-refresh', now() + interval '1 hour'),
		       ($2, 'twitter', 'app-dead', 'app-refresh-2', now() - interval '3 days')`, alice, bob)
	// Without the app's expiry column nothing says when they expire.
	for _, user := range []string{alice, bob} {
		if code, _, body := h.fetchToken(h.internal, user, "twitter", serviceToken); code != http.StatusConflict || errorCode(body) != "expiry_unknown" {
			t.Errorf("%s without an expiry column: %d %s, want 409 expiry_unknown", user, code, body)
		}
	}
	if err := vault.SetSetting(ctx, pgtest.Pool(t, h.db), vault.SettingAppExpiryColumn, "token_expires_at", "test"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, func() bool { // the setting reaches the instance within its 2 s cache
		code, _, _ := h.fetchToken(h.internal, alice, "twitter", serviceToken)
		return code == http.StatusOK
	})
	code, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || tok.AccessToken != "app-live" || time.Until(tok.ExpiresAt) < 50*time.Minute {
		t.Errorf("the app's live token: %d %s, want it with the app's expiry", code, body)
	}
	if code, _, body := h.fetchToken(h.internal, bob, "twitter", serviceToken); code != http.StatusConflict || errorCode(body) != "token_expired" {
		t.Errorf("the app's expired token: %d %s, want 409 token_expired", code, body)
	}
	if st := h.sandbox.Stats()["twitter"]; st.Refreshes != 0 {
		t.Errorf("credgate renewed the app's tokens %d times while the app renews them", st.Refreshes)
	}

	// A user credgate connected, who then reconnects through the app:
	// the app's token is served from then on.
	h.connect(carol, "linkedin")
	pgtest.Exec(t, h.db, `UPDATE social_accounts SET access_token = 'app-after-rollback', token_expires_at = now() + interval '2 hours'
		WHERE user_id = $1 AND platform = 'linkedin'`, carol)
	code, tok, body = h.fetchToken(h.internal, carol, "linkedin", serviceToken)
	if code != http.StatusOK || tok.AccessToken != "app-after-rollback" {
		t.Errorf("after the app wrote a newer token: %d %s, want the app's", code, body)
	}
}

// The runbook's rollback: a user credgate connected reconnects through
// the app at 0 %. The token API had just served credgate's token (and
// keeps it for worker.RecentFor), yet its next read serves the app's new
// one: the app's callback passed through this instance, which forgets
// what it kept. CI saw the old token served once (the runbook test, on a
// machine fast enough to reconnect within the second).
func TestTokenAPIServesTheAppsTokenRightAfterAReconnectThroughTheApp(t *testing.T) {
	flagFile := filepath.Join(t.TempDir(), "flags.json")
	setRollout(t, flagFile, true, 100)
	h := newHarness(t, harnessOptions{legacyRedirect: true, flagsFile: flagFile,
		extraSite: "legacy_start /api/{platform}/connect",
		tokenAPI:  "service_token " + serviceToken + "\n\t\tserve_legacy_plaintext"})
	waitUntil(t, 10*time.Second, func() bool { return currentApp(t).Rollout().Ready() })
	pgtest.Exec(t, h.db, `ALTER TABLE social_accounts ADD COLUMN token_expires_at timestamptz`)
	pgtest.Exec(t, h.db, `INSERT INTO social_accounts (user_id, platform, access_token, token_expires_at)
		VALUES ($1, 'twitter', 'app-live', now() + interval '1 hour')`, bob)
	if err := vault.SetSetting(context.Background(), pgtest.Pool(t, h.db), vault.SettingAppExpiryColumn, "token_expires_at", "test"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, func() bool { // the setting reaches the instance within its 2 s cache
		code, _, _ := h.fetchToken(h.internal, bob, "twitter", serviceToken)
		return code == http.StatusOK
	})
	h.connect(alice, "twitter")
	setRollout(t, flagFile, true, 0)
	h.waitForRollout(carol, false)
	code, before, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || before.AccessToken == "" {
		t.Fatalf("credgate's token: %d %s", code, body)
	}
	resp, _ := h.do("GET", "/api/twitter/connect?app_state=st-reconnect", alice, nil)
	if resp.Header.Get("X-Upstream") != "stub-app" {
		t.Fatalf("at 0 %% the connect did not go to the app: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The app stores the platform's new token, then answers its callback.
	pgtest.Exec(t, h.db, `UPDATE social_accounts SET access_token = 'app-reconnected', token_expires_at = now() + interval '2 hours'
		WHERE user_id = $1 AND platform = 'twitter'`, alice)
	if resp, _ := h.do("GET", "/api/twitter/callback?state=st-reconnect&code=c", "", nil); resp.Header.Get("X-Upstream") != "stub-app" {
		t.Fatal("the app's callback was not proxied")
	}
	code, after, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || after.AccessToken != "app-reconnected" {
		t.Errorf("right after the reconnect through the app: %d, the app's token %v (credgate's still: %v), want the app's",
			code, after.AccessToken == "app-reconnected", after.AccessToken == before.AccessToken)
	}
}

// readConcurrently reads user's token on platform n times at once and
// returns how often each answer (token and status) came.
func (h *harness) readConcurrently(n int, user, platform string) map[string]int {
	h.t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", h.internal+"/api/internal/credentials/"+user+"/"+platform+"/token", nil)
			req.Header.Set("Authorization", "Bearer "+serviceToken)
			resp, err := client.Do(req)
			if err != nil {
				h.t.Error(err)
				return
			}
			defer resp.Body.Close()
			var tok tokenResponse
			json.NewDecoder(resp.Body).Decode(&tok)
			mu.Lock()
			seen[tok.AccessToken+"/"+resp.Status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return seen
}

// A min_validity longer than the platform's tokens live (3h against X's
// 2 h) renewed at every read: twenty concurrent reads renewed one account
// four times and got four tokens, and each later read renewed again,
// rotating X's refresh token. A token is never renewed on a read in the
// first half of its life, and concurrent readers share one renewal.
// Issue 26, item 13.
func TestTokenAPIMinValidityLongerThanTheTokenLife(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken + "\n\t\tmin_validity 3h",
		caddyGlobals: "log {\n\t\toutput file " + logFile + "\n\t}"})
	// The setting is named at start, with the platform's lifetime.
	logs, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(logs), "min_validity 3h is more than half the life of twitter's access tokens (2h)") {
		t.Errorf("no warning naming X's 2 h tokens in the log (%v)", err)
	}
	if strings.Contains(string(logs), "linkedin's access tokens") {
		t.Error("a warning for LinkedIn's 60-day tokens")
	}
	h.connect(alice, "twitter")
	for _, step := range []struct {
		advance  time.Duration
		renewals int
	}{
		{0, 0},                // just issued: served as it is
		{50 * time.Minute, 0}, // 70 minutes left, still in the first half of its life
		{15 * time.Minute, 1}, // 55 minutes left: renewed, once for all readers
		{0, 0},                // the renewed token is fresh
		{30 * time.Minute, 0}, // and stays so for its first hour
	} {
		h.sandbox.Clock().Advance(step.advance)
		before := h.sandbox.Stats()["twitter"]
		seen := h.readConcurrently(20, alice, "twitter")
		after := h.sandbox.Stats()["twitter"]
		if after.Refreshes-before.Refreshes != step.renewals || after.RefreshReuse != 0 || len(seen) != 1 {
			t.Fatalf("after %v more: 20 concurrent reads caused %d renewals (%d refresh-token reuses) and answered %d ways %v; want %d renewals and one token",
				step.advance, after.Refreshes-before.Refreshes, after.RefreshReuse, len(seen), seen, step.renewals)
		}
		for k := range seen {
			if !strings.HasSuffix(k, "/200 OK") || !h.worksAtSandbox("twitter", strings.TrimSuffix(k, "/200 OK")) {
				t.Fatalf("answer %q is not a working token", k)
			}
		}
	}
}

// tableAway renames table for a moment, so that what reads it fails
// after a route's own checks passed; back restores it.
func (h *harness) tableAway(table string) (back func()) {
	h.t.Helper()
	pool := pgtest.Pool(h.t, h.db)
	rename := func(from, to string) {
		h.t.Helper()
		if _, err := pool.Exec(context.Background(), `ALTER TABLE `+from+` RENAME TO `+to); err != nil {
			h.t.Fatal(err)
		}
	}
	rename(table, table+"_away")
	return func() { rename(table+"_away", table) }
}

// A read the database fails part way (here its table is away for a
// moment, after the route's own checks passed) is still a token read:
// the token API and egress both count it into the window's token_read
// rows, with the code they answered. They wrote nothing for it before.
func TestATokenReadTheDatabaseFailsIsStillAudited(t *testing.T) {
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken, egress: "service_token " + serviceToken})
	h.connect(alice, "twitter")
	back := h.tableAway("social_accounts")
	code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	egressCode, egressBody := h.egressCall("GET", "/twitter/2/users/me", alice, serviceToken, "")
	back()
	if code != http.StatusInternalServerError || errorCode(body) != "internal" {
		t.Fatalf("token API with the table away: %d %s, want 500 internal", code, body)
	}
	if egressCode != http.StatusInternalServerError || errorCode([]byte(egressBody)) != "internal" {
		t.Fatalf("egress with the table away: %d %s, want 500 internal", egressCode, egressBody)
	}
	h.flushReadAudit()
	for _, via := range []string{"token_api", "egress"} {
		if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'token_read' AND status = 'failed'
			AND error_code = 'internal' AND user_id = $1 AND details->>'via' = $2`, alice, via); n != 1 {
			t.Errorf("%s: %d failed token_read rows for the read the database failed, want 1", via, n)
		}
	}
}
