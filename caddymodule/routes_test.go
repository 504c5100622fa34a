package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/internal/oauthtest"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// TestConnectEveryPlatform runs connect → status → health-check →
// disconnect for the four platforms through a real Caddy, the sandbox and
// PostgreSQL, and checks the rows behind each step.
func TestConnectEveryPlatform(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	pool := pgtest.Pool(t, h.db)
	accounts := vault.NewAccounts(h.keys)
	var tokens []string

	for _, platform := range sandbox.Platforms {
		loc := h.connect(alice, platform)
		if loc != "/settings?connected="+platform {
			t.Fatalf("%s: final redirect %q", platform, loc)
		}
		acct, creds, err := accounts.Get(ctx, pool, alice, platform)
		if err != nil {
			t.Fatalf("%s: %v", platform, err)
		}
		if acct.ConnectedVia != vault.ViaCredgate || acct.Status != vault.StatusConnected || acct.Version != 1 || acct.ExpiresAt == nil {
			t.Errorf("%s account: %+v", platform, acct)
		}
		// The blob holds the sandbox's live token: the sandbox's own
		// profile endpoint accepts it and names the same account.
		auth, tok, api, _ := oauth.SandboxURLs(platform, h.sbURL)
		p, _ := oauth.New(platform, oauth.Config{ClientID: platform + "-client-id", ClientSecret: secret.New(platform + "-client-secret"),
			RedirectURL: "http://x/cb", AuthURL: auth, TokenURL: tok, APIBase: api})
		id, err := p.Identify(ctx, creds.AccessToken)
		if err != nil || id.ID != acct.PlatformUserID {
			t.Errorf("%s: stored token does not work at the provider: %v (%s vs %s)", platform, err, id.ID, acct.PlatformUserID)
		}
		tokens = append(tokens, creds.AccessToken.Reveal())
		if !creds.RefreshToken.IsZero() {
			tokens = append(tokens, creds.RefreshToken.Reveal())
		}
		if n := h.count(`SELECT count(*) FROM token_refresh_queue q JOIN social_accounts a ON a.id = q.social_account_id
			WHERE a.user_id = $1 AND a.platform = $2 AND q.status = 'pending'`, alice, platform); n != 1 {
			t.Errorf("%s: %d refresh jobs", platform, n)
		}
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'oauth_start' AND status = 'success' AND flow = 'new'`); n != 4 {
		t.Errorf("oauth_start audit rows: %d", n)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'success' AND flow = 'new' AND duration_ms IS NOT NULL`); n != 4 {
		t.Errorf("connect audit rows: %d", n)
	}
	if n := h.count(`SELECT count(*) FROM oauth_states`); n != 0 {
		t.Errorf("%d states left after four completed flows", n)
	}
	dump := pgDump(t, h.db)
	for _, tok := range tokens {
		if strings.Contains(dump, tok) {
			t.Fatalf("a plaintext token appears in pg_dump")
		}
	}

	// Status includes a row the legacy app wrote, and no secret.
	pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, access_token, username) VALUES ($1, 'legacyplatform', 'legacy-secret-token', 'old')`, alice)
	resp, body := h.do("GET", "/api/credentials/status", alice, nil)
	var status struct{ Accounts []gateway.AccountView }
	json.Unmarshal(body, &status)
	if resp.StatusCode != 200 || len(status.Accounts) != 5 || strings.Contains(string(body), "legacy-secret-token") {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
	for _, tok := range tokens {
		if strings.Contains(string(body), tok) {
			t.Fatal("status leaks a token")
		}
	}
	resp, body = h.do("GET", "/api/credentials/health-check", alice, nil)
	var health struct{ Accounts []healthView }
	json.Unmarshal(body, &health)
	if resp.StatusCode != 200 || len(health.Accounts) != 5 {
		t.Fatalf("health-check: %d %s", resp.StatusCode, body)
	}
	for _, a := range health.Accounts {
		if a.Platform == "twitter" && (a.SecondsToExpiry == nil || *a.SecondsToExpiry < 7000 || a.NeedsReauth) {
			t.Errorf("twitter health: %+v", a)
		}
	}

	// Bob sees none of it.
	_, body = h.do("GET", "/api/credentials/status", bob, nil)
	if string(body) != `{"accounts":[]}`+"\n" {
		t.Errorf("another user's status: %s", body)
	}

	for _, platform := range sandbox.Platforms {
		resp, body := h.do("DELETE", "/api/credentials/"+platform+"/disconnect", alice, map[string]string{"Origin": h.origin})
		var out struct {
			Platform     string
			Disconnected bool
			Revoked      bool
		}
		json.Unmarshal(body, &out)
		wantRevoked := platform == "twitter" || platform == "facebook"
		if resp.StatusCode != 200 || out.Platform != platform || !out.Disconnected || out.Revoked != wantRevoked {
			t.Errorf("%s disconnect: %d %s", platform, resp.StatusCode, body)
		}
		if _, _, err := accounts.Get(ctx, pool, alice, platform); err != vault.ErrNotConnected {
			t.Errorf("%s still connected after disconnect: %v", platform, err)
		}
		resp, body = h.do("DELETE", "/api/credentials/"+platform+"/disconnect", alice, map[string]string{"Origin": h.origin})
		if resp.StatusCode != 404 || errorCode(body) != "not_connected" {
			t.Errorf("%s second disconnect: %d %s", platform, resp.StatusCode, body)
		}
	}
	stats := h.sandbox.Stats()
	if stats["twitter"].Revocations != 1 || stats["facebook"].Revocations != 1 {
		t.Errorf("revocations at the sandbox: %+v", stats)
	}
	if n := h.count(`SELECT count(*) FROM token_refresh_queue WHERE status IN ('pending','running')`); n != 0 {
		t.Errorf("%d refresh jobs survive disconnect", n)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'disconnect' AND status = 'success'`); n != 4 {
		t.Errorf("disconnect audit rows: %d", n)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'revoke' AND status = 'success'`); n != 2 {
		t.Errorf("revoke audit rows: %d", n)
	}
}

// TestRouteErrors checks every error case: status, code, and that
// nothing was stored.
func TestRouteErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{extraSite: "login_url /login"})
	nothingStored := func(t *testing.T) {
		t.Helper()
		if n := h.count(`SELECT count(*) FROM social_accounts`); n != 0 {
			t.Errorf("%d accounts stored", n)
		}
	}

	t.Run("start without identity", func(t *testing.T) {
		resp, body := h.do("GET", "/api/auth/oauth/twitter", "", map[string]string{"Accept": "application/json"})
		if resp.StatusCode != 401 || errorCode(body) != "unauthenticated" {
			t.Errorf("api: %d %s", resp.StatusCode, body)
		}
		resp, _ = h.do("GET", "/api/auth/oauth/twitter?return_to=/settings", "", nil)
		if resp.StatusCode != 302 || !strings.HasPrefix(resp.Header.Get("Location"), "/login?return_to=") {
			t.Errorf("browser: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		resp, _ = h.do("GET", "/api/auth/oauth/twitter", "", map[string]string{"Authorization": "Bearer not.a.jwt"})
		if resp.StatusCode != 302 {
			t.Errorf("bad token is no identity: %d", resp.StatusCode)
		}
	})
	t.Run("cross-site start", func(t *testing.T) {
		resp, body := h.do("GET", "/api/auth/oauth/twitter", alice, map[string]string{"Sec-Fetch-Site": "cross-site"})
		if resp.StatusCode != 403 || errorCode(body) != "cross_origin" {
			t.Errorf("cross-site: %d %s", resp.StatusCode, body)
		}
		if n := h.count(`SELECT count(*) FROM oauth_states`); n != 0 {
			t.Errorf("a cross-site start stored %d states", n)
		}
	})
	t.Run("unknown platform", func(t *testing.T) {
		for _, path := range []string{"/api/auth/oauth/myspace", "/api/auth/oauth/myspace/callback?state=x"} {
			resp, body := h.do("GET", path, alice, nil)
			if resp.StatusCode != 404 || errorCode(body) != "unknown_platform" {
				t.Errorf("%s: %d %s", path, resp.StatusCode, body)
			}
		}
	})
	t.Run("open redirect attempts", func(t *testing.T) {
		for _, rt := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "/other", "/settingsx", "javascript:alert(1)",
			"/settings/../../evil", "settings", "/settings\r\nX: y", "http:/settings"} {
			resp, body := h.do("GET", "/api/auth/oauth/twitter?return_to="+url.QueryEscape(rt), alice, nil)
			if resp.StatusCode != 400 || errorCode(body) != "invalid_return_to" {
				t.Errorf("return_to %q: %d %s", rt, resp.StatusCode, body)
			}
		}
	})
	t.Run("bad states", func(t *testing.T) {
		providerURL, cookie := h.startFlow(alice, "twitter", "/settings")
		cb := h.authorize(providerURL)
		u, _ := url.Parse(cb)
		good := u.Query().Get("state")
		withState := func(s string) string {
			q := u.Query()
			if s == "" {
				q.Del("state")
			} else {
				q.Set("state", s)
			}
			return h.origin + "/api/auth/oauth/twitter/callback?" + q.Encode()
		}
		cases := []struct {
			name, url string
			cookie    *http.Cookie
			user      string
			want      string
		}{
			{"missing", withState(""), cookie, alice, "invalid_state"},
			{"random", withState("cg1.random"), cookie, alice, "invalid_state"},
			{"another user", withState(good), cookie, bob, "state_mismatch"},
		}
		for _, c := range cases {
			resp, body := h.callback(c.url, c.cookie, c.user)
			if resp.StatusCode != 400 || errorCode(body) != c.want {
				t.Errorf("%s: %d %s", c.name, resp.StatusCode, body)
			}
			if c.name == "random" && h.count(`SELECT count(*) FROM credential_audit_log WHERE status = 'failed'`) != 0 {
				t.Error("a state credgate never issued reached the database")
			}
		}
		// The foreign-user attempt consumed the state: replaying it with
		// the right user now fails as unknown.
		resp, body := h.callback(withState(good), cookie, alice)
		if resp.StatusCode != 400 || errorCode(body) != "invalid_state" {
			t.Errorf("replay: %d %s", resp.StatusCode, body)
		}
		// Another browser (no binding cookie).
		providerURL, _ = h.startFlow(alice, "facebook", "/settings")
		resp, body = h.callback(h.authorize(providerURL), nil, alice)
		if resp.StatusCode != 400 || errorCode(body) != "state_mismatch" {
			t.Errorf("no cookie: %d %s", resp.StatusCode, body)
		}
		// A state from one platform on another's callback.
		providerURL, cookie = h.startFlow(alice, "linkedin", "/settings")
		cb = strings.Replace(h.authorize(providerURL), "/oauth/linkedin/", "/oauth/instagram/", 1)
		resp, body = h.callback(cb, &http.Cookie{Name: "__Host-credgate-instagram", Value: cookie.Value}, alice)
		if resp.StatusCode != 400 || errorCode(body) != "state_mismatch" {
			t.Errorf("cross-platform: %d %s", resp.StatusCode, body)
		}
		// Expired.
		providerURL, cookie = h.startFlow(alice, "twitter", "/settings")
		pool := pgtest.Pool(t, h.db)
		pool.Exec(context.Background(), `UPDATE oauth_states SET expires_at = now() - interval '1 second'`)
		resp, body = h.callback(h.authorize(providerURL), cookie, alice)
		if resp.StatusCode != 400 || errorCode(body) != "invalid_state" {
			t.Errorf("expired: %d %s", resp.StatusCode, body)
		}
		// The row knew whose flow it was: the audit row says so.
		if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed'
			AND details->>'reason' = 'expired' AND user_id = $1 AND flow = 'new'`, alice); n != 1 {
			t.Errorf("the expired state's audit row lacks the user or the flow")
		}
		if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed' AND error_code IN ('invalid_state','state_mismatch')`); n != 5 {
			t.Errorf("failed audit rows: %d, want 5 (junk states are not audited)", n)
		}
		nothingStored(t)
	})
	t.Run("provider denial and exchange failure", func(t *testing.T) {
		providerURL, cookie := h.startFlow(alice, "instagram", "/accounts")
		u, _ := url.Parse(providerURL)
		q := u.Query()
		q.Set("sandbox_decision", "deny")
		u.RawQuery = q.Encode()
		h.sandbox.Stats() // (the sandbox auto-approves; the explicit decision wins)
		resp, _ := h.callback(h.authorizeDeny(u.String()), cookie, alice)
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "/accounts?oauth_error=access_denied&platform=instagram" {
			t.Errorf("denied: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		h.sandbox.SetFault("twitter.token", sandbox.Fault{InvalidGrant: true})
		defer h.sandbox.SetFault("twitter.token", sandbox.Fault{})
		providerURL, cookie = h.startFlow(alice, "twitter", "/settings")
		resp, _ = h.callback(h.authorize(providerURL), cookie, alice)
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "/settings?oauth_error=invalid_grant&platform=twitter" {
			t.Errorf("exchange failure: %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed' AND error_code IN ('access_denied','invalid_grant')`); n != 2 {
			t.Errorf("failed audit rows: %d", n)
		}
		nothingStored(t)
	})
	t.Run("disconnect guards", func(t *testing.T) {
		resp, body := h.do("POST", "/api/credentials/twitter/disconnect", alice, map[string]string{"Origin": h.origin})
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "DELETE" {
			t.Errorf("POST: %d %s", resp.StatusCode, body)
		}
		resp, body = h.do("DELETE", "/api/credentials/twitter/disconnect", "", map[string]string{"Origin": h.origin})
		if resp.StatusCode != 401 {
			t.Errorf("anonymous: %d %s", resp.StatusCode, body)
		}
		for _, hdr := range []map[string]string{{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {}} {
			resp, body = h.do("DELETE", "/api/credentials/twitter/disconnect", alice, hdr)
			if resp.StatusCode != 403 || errorCode(body) != "cross_origin" {
				t.Errorf("cross-origin %v: %d %s", hdr, resp.StatusCode, body)
			}
		}
		resp, body = h.do("DELETE", "/api/credentials/twitter/disconnect", alice, map[string]string{"Sec-Fetch-Site": "same-origin"})
		if resp.StatusCode != 404 || errorCode(body) != "not_connected" {
			t.Errorf("not connected: %d %s", resp.StatusCode, body)
		}
		// A name that is no configured platform never reaches PostgreSQL
		// (a NUL or invalid UTF-8 used to be a 500 and an error log).
		for _, bad := range []string{"tw%00itter", "%ff%fe", "nosuch", "TWITTER"} {
			resp, body = h.do("DELETE", "/api/credentials/"+bad+"/disconnect", alice, map[string]string{"Sec-Fetch-Site": "same-origin"})
			if resp.StatusCode != 404 || errorCode(body) != "unknown_platform" {
				t.Errorf("platform %q: %d %s", bad, resp.StatusCode, body)
			}
		}
	})
	t.Run("admin routes", func(t *testing.T) {
		resp, body := h.do("POST", "/api/maintenance/cleanup", "", nil)
		if resp.StatusCode != 401 {
			t.Errorf("cleanup without token: %d %s", resp.StatusCode, body)
		}
		resp, body = h.do("POST", "/api/maintenance/cleanup", "", map[string]string{"Authorization": "Bearer wrong"})
		if resp.StatusCode != 401 {
			t.Errorf("cleanup with a wrong token: %d %s", resp.StatusCode, body)
		}
		resp, _ = h.do("GET", "/api/maintenance/cleanup", "", map[string]string{"Authorization": "Bearer " + adminToken})
		if resp.StatusCode != 405 {
			t.Errorf("GET cleanup: %d", resp.StatusCode)
		}
		h.startFlow(alice, "twitter", "/settings")
		h.startFlow(alice, "facebook", "/settings")
		pgtest.Pool(t, h.db).Exec(context.Background(), `UPDATE oauth_states SET expires_at = now() - interval '1 minute'`)
		resp, body = h.do("POST", "/api/maintenance/cleanup", "", map[string]string{"Authorization": "Bearer " + adminToken})
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"deleted":2}` {
			t.Errorf("cleanup: %d %s", resp.StatusCode, body)
		}
		if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'state_cleanup' AND (details->>'deleted')::int = 2`); n != 1 {
			t.Errorf("cleanup audit rows: %d", n)
		}
		// Every admin route answers a missing or wrong admin token alike.
		for _, path := range []string{"/api/credentials/service-health", "/api/credentials/rollout"} {
			resp, body = h.do("GET", path, alice, nil)
			if resp.StatusCode != 401 || errorCode(body) != "unauthorized" {
				t.Errorf("%s as a user: %d %s", path, resp.StatusCode, body)
			}
		}
		resp, body = h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
		var sh map[string]any
		json.Unmarshal(body, &sh)
		if resp.StatusCode != 200 || sh["ok"] != true || len(sh["providers"].(map[string]any)) != 4 {
			t.Errorf("service-health: %d %s", resp.StatusCode, body)
		}
		if strings.Contains(string(body), testKey(1)) || strings.Contains(string(body), "client-secret") {
			t.Error("service-health leaks a secret")
		}
	})
	t.Run("credential routes without identity", func(t *testing.T) {
		for _, path := range []string{"/api/credentials/status", "/api/credentials/health-check"} {
			resp, body := h.do("GET", path, "", nil)
			if resp.StatusCode != 401 || errorCode(body) != "unauthenticated" || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s: %d %s", path, resp.StatusCode, body)
			}
		}
	})
	if len(h.upstreamSaw()) != 0 {
		t.Errorf("credgate routes leaked to the app: %+v", h.upstreamSaw())
	}
}

// authorizeDeny posts a denial to the consent form.
func (h *harness) authorizeDeny(providerURL string) string {
	h.t.Helper()
	resp, err := client.PostForm(providerURL, url.Values{"decision": {"deny"}})
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Location")
}

// A flow in flight when redirect_url changes (guide Step 5.4) exchanges its
// code with the redirect URI it was started with.
func TestRedirectURLChangeMidFlow(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	providerURL, cookie := h.startFlow(alice, "linkedin", "/settings")
	cb := h.authorize(providerURL)
	h.opt.legacyRedirect = true
	h.load("")
	resp, body := h.callback(cb, cookie, alice)
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/settings?connected=linkedin" {
		t.Fatalf("callback after the redirect_url change: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
}

// Disconnecting an account whose blob no longer decrypts still wipes it,
// and the audit log says the token could not be revoked.
func TestDisconnectOfATamperedBlobIsAudited(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.connect(alice, "twitter")
	pgtest.Exec(t, h.db, `UPDATE social_accounts SET credentials_encrypted = `+pgtest.TamperedBlob)
	resp, body := h.do("DELETE", "/api/credentials/twitter/disconnect", alice, map[string]string{"Origin": h.origin})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"revoked":false`) {
		t.Fatalf("disconnect: %d %s", resp.StatusCode, body)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'decrypt_failed' AND user_id = $1 AND platform = 'twitter'
		AND details->>'during' = 'disconnect'`, alice); n != 1 {
		t.Fatalf("%d decrypt_failed rows for the disconnect, want 1", n)
	}
	if n := h.count(`SELECT count(*) FROM social_accounts WHERE credentials_encrypted IS NOT NULL`); n != 0 {
		t.Fatal("the tampered blob was not wiped")
	}
}

// Tokens the platform issued but credgate could not store are revoked at
// the platform, and the failed connect is audited.
func TestStoreFailureAfterTheExchangeIsAuditedAndRevoked(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	// A storage failure for one user only, deterministic and fast: a
	// trigger that refuses their row.
	pgtest.Exec(t, h.db, `CREATE FUNCTION refuse_alice() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'storage is failing'; END $$;
		CREATE TRIGGER refuse_alice BEFORE INSERT OR UPDATE ON social_accounts FOR EACH ROW
		WHEN (NEW.user_id = '`+alice+`' AND NEW.credentials_encrypted IS NOT NULL) EXECUTE FUNCTION refuse_alice()`)
	before := h.sandbox.Stats()["twitter"].Revocations
	loc := h.connect(alice, "twitter")
	if !strings.Contains(loc, "oauth_error=storage_unavailable") {
		t.Fatalf("redirect: %s", loc)
	}
	if got := h.sandbox.Stats()["twitter"].Revocations - before; got != 1 {
		t.Fatalf("%d revocations at the platform, want 1", got)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed' AND user_id = $1
		AND error_code = 'storage_unavailable' AND details->>'issued_token_revoked' = 'true'`, alice); n != 1 {
		t.Fatalf("%d failed connect rows, want 1", n)
	}
}

// One user hammering the start route is refused past the limit (10 per
// minute per platform by default) with 429 and Retry-After, before any
// row is written; other users and platforms are not affected.
func TestStartRouteIsRateLimitedPerUserAndPlatform(t *testing.T) {
	h := newHarness(t, harnessOptions{extraSite: "start_limit 3/1m"})
	for i := range 3 {
		if resp, body := h.do("GET", "/api/auth/oauth/twitter?return_to=/settings", alice, nil); resp.StatusCode != http.StatusFound {
			t.Fatalf("start %d: %d %s", i+1, resp.StatusCode, body)
		}
	}
	rows := h.count(`SELECT count(*) FROM credential_audit_log`)
	resp, body := h.do("GET", "/api/auth/oauth/twitter?return_to=/settings", alice, nil)
	if resp.StatusCode != http.StatusTooManyRequests || errorCode(body) != "too_many_requests" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th start: %d %s (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log`); n != rows {
		t.Fatalf("a refused start wrote %d audit rows", n-rows)
	}
	if resp, _ := h.do("GET", "/api/auth/oauth/linkedin?return_to=/settings", alice, nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("another platform: %d", resp.StatusCode)
	}
	if resp, _ := h.do("GET", "/api/auth/oauth/twitter?return_to=/settings", bob, nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("another user: %d", resp.StatusCode)
	}
}

// Two generic providers with names of their own, through a real Caddy,
// against go-oauth2/oauth2 v4: one authenticating clients with
// client_secret_basic (its default), one with client_secret_post. Each
// has its own routes, and a whole flow works on both.
func TestNamedGenericProviders(t *testing.T) {
	basicOnly, basicCalls := oauthtest.GoOAuth2Server(t, "", false)
	postOnly, _ := oauthtest.GoOAuth2Server(t, "", true)
	provider := func(name, url, style string) string {
		return fmt.Sprintf(`
		provider %s {
			kind generic
			client_id %s
			client_secret %s
			auth_url %s/authorize
			token_url %s/token
			auth_style %s
			scopes all
		}`, name, oauthtest.ClientID, oauthtest.ClientSecret, url, url, style)
	}
	h := newHarness(t, harnessOptions{globalOptions: provider("acme", basicOnly.URL, "basic") + provider("corp-sso", postOnly.URL, "auto")})
	for _, name := range []string{"acme", "corp-sso"} {
		providerURL, cookie := h.startFlow(alice, name, "/settings")
		if !strings.Contains(providerURL, "client_id="+oauthtest.ClientID) {
			t.Fatalf("%s: start went to %s", name, providerURL)
		}
		resp, body := h.callback(h.authorize(providerURL), cookie, alice)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/settings?connected="+name {
			t.Fatalf("%s: callback %d %s %s", name, resp.StatusCode, resp.Header.Get("Location"), body)
		}
		if n := h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND platform = $2 AND credentials_encrypted IS NOT NULL`, alice, name); n != 1 {
			t.Fatalf("%s: %d stored accounts", name, n)
		}
	}
	if n := basicCalls.Load(); n != 1 {
		t.Errorf("the basic-only server saw %d token requests, want 1 (basic at once)", n)
	}
}

// TestConnectStoreIsAllOrNothing injects a failure, with a trigger, at
// each statement of the callback's store, on each of its paths: a new
// account row and a row the user already had (the one statement of
// Accounts.StoreConnect), and a row that appears between the state's
// consume and the store (the fallback, which locks the row and seals
// again). Each failure must leave none of the connect's writes (the
// credential, its refresh job, its success audit row), and the same user's
// next connect must store all three, on a row whose blob opens.
func TestConnectStoreIsAllOrNothing(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	pool := pgtest.Pool(t, h.db)
	accounts := vault.NewAccounts(h.keys)
	// The job's trigger cannot test the user in its WHEN (a subquery), so
	// the function does, for that table.
	pgtest.Exec(t, h.db, `CREATE FUNCTION fail_step() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF TG_TABLE_NAME = 'token_refresh_queue' AND NOT EXISTS (SELECT 1 FROM social_accounts a
					WHERE a.id = NEW.social_account_id AND a.user_id::text = TG_ARGV[0]) THEN
				RETURN NEW;
			END IF;
			RAISE EXCEPTION 'injected failure';
		END $$`)
	// A row that appears once the callback consumed its state (as if the
	// app inserted it then): the state's DELETE has already read the
	// account (none), so the store's one statement finds a row with
	// another id and falls back.
	pgtest.Exec(t, h.db, `CREATE FUNCTION appear_row() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO social_accounts (user_id, platform) VALUES (OLD.user_id, OLD.platform) ON CONFLICT DO NOTHING;
			RETURN OLD;
		END $$`)
	steps := map[string]string{
		"account insert":     `BEFORE INSERT ON social_accounts FOR EACH ROW WHEN (NEW.user_id = '%[1]s' AND NEW.credentials_encrypted IS NOT NULL) EXECUTE FUNCTION fail_step('%[1]s')`,
		"account lock":       `BEFORE UPDATE ON social_accounts FOR EACH ROW WHEN (NEW.user_id = '%[1]s' AND NEW.credentials_encrypted IS NULL) EXECUTE FUNCTION fail_step('%[1]s')`,
		"credentials update": `BEFORE UPDATE ON social_accounts FOR EACH ROW WHEN (NEW.user_id = '%[1]s' AND NEW.credentials_encrypted IS NOT NULL) EXECUTE FUNCTION fail_step('%[1]s')`,
		"refresh job":        `BEFORE INSERT ON token_refresh_queue FOR EACH ROW EXECUTE FUNCTION fail_step('%[1]s')`,
		"audit row":          `BEFORE INSERT ON credential_audit_log FOR EACH ROW WHEN (NEW.user_id = '%[1]s' AND NEW.action = 'connect') EXECUTE FUNCTION fail_step('%[1]s')`,
	}
	paths := []struct {
		name  string
		setup string // SQL run before the connect: %[1]s is the user, %[2]d a number of its own
		steps []string
	}{
		{"new row", ``, []string{"", "account insert", "refresh job", "audit row"}},
		{"existing row", `INSERT INTO social_accounts (user_id, platform) VALUES ('%[1]s', 'twitter') -- %[2]d`,
			[]string{"", "credentials update", "refresh job", "audit row"}},
		{"row appears after the consume", `CREATE TRIGGER appear_%[2]d AFTER DELETE ON oauth_states FOR EACH ROW WHEN (OLD.user_id = '%[1]s') EXECUTE FUNCTION appear_row()`,
			[]string{"", "account lock", "credentials update", "refresh job", "audit row"}},
	}
	n := 0
	for _, path := range paths {
		for _, step := range path.steps {
			n++
			user := fmt.Sprintf("00000000-0000-4000-8000-%012d", 700+n)
			what := path.name + ", no failure"
			if step != "" {
				what = path.name + ", failing at the " + step
			}
			if path.setup != "" {
				pgtest.Exec(t, h.db, fmt.Sprintf(path.setup, user, n))
			}
			if step != "" {
				pgtest.Exec(t, h.db, fmt.Sprintf(`CREATE TRIGGER fail_step_%[2]d `+steps[step], user, n))
				if loc := h.connect(user, "twitter"); !strings.Contains(loc, "oauth_error=storage_unavailable") {
					t.Fatalf("%s: redirect %s", what, loc)
				}
				stored := h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND credentials_encrypted IS NOT NULL`, user)
				jobs := h.count(`SELECT count(*) FROM token_refresh_queue q JOIN social_accounts a ON a.id = q.social_account_id WHERE a.user_id = $1`, user)
				audited := h.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = $1 AND action = 'connect' AND status = 'success'`, user)
				wantRows := 0
				if path.setup != "" {
					wantRows = 1 // the row that was there, or appeared, stays
				}
				if rows := h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1`, user); stored != 0 || jobs != 0 || audited != 0 || rows != wantRows {
					t.Fatalf("%s: left %d rows (want %d), %d with a credential, %d jobs, %d success audit rows; want none", what, rows, wantRows, stored, jobs, audited)
				}
				pgtest.Exec(t, h.db, fmt.Sprintf(`DROP TRIGGER fail_step_%d ON %s`, n, strings.Fields(steps[step])[3]))
			}
			// Without the failure the same user connects, all three written.
			if loc := h.connect(user, "twitter"); !strings.Contains(loc, "connected=twitter") {
				t.Fatalf("%s: then a clean connect redirected to %s", what, loc)
			}
			if h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND credentials_encrypted IS NOT NULL AND connected_via = 'credgate'`, user) != 1 ||
				h.count(`SELECT count(*) FROM credential_audit_log l JOIN social_accounts a ON a.user_id = l.user_id AND a.platform = l.platform
					WHERE l.user_id = $1 AND l.action = 'connect' AND l.status = 'success' AND l.details->>'account_id' = a.id::text`, user) != 1 {
				t.Fatalf("%s: then a clean connect did not store the credential and its audit row", what)
			}
			// The job is for the credentials version the connect wrote.
			if h.count(`SELECT count(*) FROM token_refresh_queue q JOIN social_accounts a ON a.id = q.social_account_id
				WHERE a.user_id = $1 AND q.status = 'pending' AND q.credentials_version = a.credentials_version`, user) != 1 {
				t.Fatalf("%s: then the clean connect's refresh job is missing or for another version", what)
			}
			// The blob was sealed for the row it is on.
			if _, creds, err := accounts.Get(ctx, pool, user, "twitter"); err != nil || creds.AccessToken.IsZero() {
				t.Fatalf("%s: the stored credential does not open: %v", what, err)
			}
		}
	}
}
