package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/google/uuid"

	"github.com/credgate/credgate/internal/caddylog"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/internal/testport"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/vault"
)

const (
	devSecret  = "test-jwt-secret-test-jwt-secret-0123456789"
	adminToken = "admin-token-for-tests"
	alice      = "11111111-1111-4111-8111-111111111111"
	bob        = "22222222-2222-4222-8222-222222222222"
)

// upstreamRequest is what the stub app received.
type upstreamRequest struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// harness is a real Caddy (loaded in this process from a Caddyfile) with
// the credgate handler in front of a stub app, the sandbox on real HTTP,
// and a database of its own.
type harness struct {
	t          testing.TB
	db         string
	origin     string // Caddy's site, what browsers see
	internal   string // the internal site with the token API, if any
	egress     string // the internal site with the egress proxy, if any
	metricsURL string // Caddy's Prometheus endpoint, if any
	sandbox    *sandbox.Server
	sbURL      string
	upstream   *httptest.Server
	mu         sync.Mutex
	seen       []upstreamRequest
	keys       *vault.Keyring

	logFile          string // Caddy's log, when a test asked for one
	opt              harnessOptions
	retryTransport   bool
	transportRetries atomic.Int64
}

func freePort(t testing.TB) int { return testport.Free(t) }

type harnessOptions struct {
	databaseURL string // default: a fresh migrated database
	extraSite   string // more handler options
	// flagsFile, if set, drives the rollout with flagd reading this
	// file; otherwise static 100%.
	flagsFile string
	// flags, if set, is the whole flags line (flagd_rpc …).
	flags string
	// legacyRedirect registers the app's legacy callback URL as each
	// provider's redirect_url, as a real rollout does.
	legacyRedirect bool
	// globalOptions are more lines in the credgate global option.
	globalOptions string
	// tokenAPI adds an internal site with credgate_tokens (h.internal).
	tokenAPI string
	// egress adds an internal site with credgate_egress (h.egress), and
	// gives each provider its posting scope.
	egress string
	// metrics adds a site serving Caddy's metrics (h.metricsURL).
	metrics bool
	// caddyGlobals are more global options (outside credgate's block).
	caddyGlobals string
	// siteDirectives go in the public site before credgate (tracing …).
	siteDirectives string
	// extraSites are whole sites appended to the Caddyfile.
	extraSites string
	// identity replaces the identity block's body (default: the dev
	// jwt_secret, read from the Authorization header h.do sends).
	identity string
}

// egressScopes are each platform's default scopes plus its posting scope.
var egressScopes = map[string]string{
	"twitter":   "tweet.read tweet.write users.read offline.access",
	"linkedin":  "openid profile w_member_social",
	"facebook":  "public_profile pages_manage_posts",
	"instagram": "instagram_business_basic instagram_business_content_publish",
}

func newHarness(t testing.TB, opt harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t}
	h.db = opt.databaseURL
	if h.db == "" {
		h.db = pgtest.Database(t)
	}
	port := freePort(t)
	h.origin = fmt.Sprintf("http://127.0.0.1:%d", port)
	if opt.tokenAPI != "" {
		h.internal = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	}
	if opt.egress != "" {
		h.egress = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	}
	if opt.metrics {
		h.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", freePort(t))
	}
	h.sandbox = sandbox.New(sandbox.Config{AutoApprove: true, Apps: sandbox.DefaultApps(h.origin)})
	sb := httptest.NewServer(h.sandbox)
	t.Cleanup(sb.Close)
	h.sbURL = sb.URL
	h.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.seen = append(h.seen, upstreamRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		h.mu.Unlock()
		w.Header().Set("X-Upstream", "stub-app")
		w.Header().Set("Set-Cookie", "app_session=abc; Path=/")
		// The app's connect route sends the browser to the platform with
		// a state of its own (app_state, or a fresh one), as real apps do.
		if strings.HasPrefix(r.URL.Path, "/api/") && strings.HasSuffix(r.URL.Path, "/connect") {
			state := r.URL.Query().Get("app_state")
			if state == "" {
				state = "app-" + uuid.NewString()
			}
			http.Redirect(w, r, "https://platform.invalid/oauth/authorize?client_id=app&state="+url.QueryEscape(state), http.StatusFound)
			return
		}
		// Its callback: a failure it reports with a redirect.
		if r.URL.Query().Get("stub_redirect") != "" {
			http.Redirect(w, r, r.URL.Query().Get("stub_redirect"), http.StatusFound)
			return
		}
		status := http.StatusOK
		if r.URL.Query().Get("stub_status") == "500" {
			status = http.StatusInternalServerError
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "app saw %s %s %d bytes", r.Method, r.URL.Path, len(body))
	}))
	t.Cleanup(h.upstream.Close)
	h.keys, _ = vault.NewKeyring(vault.KeyConfig{MasterKey: testKey(1)})
	h.opt = opt
	h.load(opt.extraSite)
	t.Cleanup(func() { caddy.Stop() })
	return h
}

// caddyfile renders the config under test.
func (h *harness) caddyfile(extraSite string) string {
	// Tests and benchmarks start many flows for one user; the start limit
	// has its own test, which sets it.
	if !strings.Contains(extraSite, "start_limit") {
		extraSite += "\nstart_limit off"
	}
	// Decisions on a busy test machine must not time out unless a test is
	// about the deadline (it sets decision_timeout itself).
	globals := h.opt.globalOptions
	if !strings.Contains(globals, "decision_timeout") {
		globals += "\n\t\tdecision_timeout 5s"
	}
	var providers strings.Builder
	for _, p := range sandbox.Platforms {
		redirect := h.origin + "/api/auth/oauth/" + p + "/callback"
		if h.opt.legacyRedirect {
			redirect = h.origin + "/api/" + p + "/callback"
		}
		scopes := ""
		if h.opt.egress != "" {
			scopes = "\n\t\t\tscopes " + egressScopes[p]
		}
		fmt.Fprintf(&providers, `
		provider %s {
			client_id %s-client-id
			client_secret %s-client-secret
			redirect_url %s
			sandbox %s%s
		}`, p, p, p, redirect, h.sbURL, scopes)
	}
	identityBody := "jwt_secret " + devSecret
	if h.opt.identity != "" {
		identityBody = h.opt.identity
	}
	flagsLine := "static 100"
	if h.opt.flagsFile != "" {
		flagsLine = "flagd " + h.opt.flagsFile
	}
	if h.opt.flags != "" {
		flagsLine = h.opt.flags
	}
	internalSite := ""
	if h.metricsURL != "" {
		internalSite += fmt.Sprintf("\n%s {\n\tmetrics /metrics\n}\n", strings.TrimSuffix(h.metricsURL, "/metrics"))
	}
	internalSite += h.opt.extraSites
	if h.egress != "" {
		internalSite += fmt.Sprintf("\n%s {\n\tcredgate_egress {\n\t\t%s\n\t}\n}\n", h.egress, h.opt.egress)
	}
	if h.internal != "" {
		internalSite += fmt.Sprintf("\n%s {\n\tcredgate_tokens {\n\t\t%s\n\t}\n\trespond \"internal: not found\" 404\n}\n", h.internal, h.opt.tokenAPI)
	}
	return fmt.Sprintf(`{
	admin off
	`+h.opt.caddyGlobals+`
	credgate {
		database_url %s
		master_key %s
		flags %s%s
		%s
	}
}
`+internalSite+`
%s {
	`+h.opt.siteDirectives+`
	credgate {
		public_origin %s
		identity {
			%s
		}
		return_to_allow /settings /accounts
		admin_token %s
		%s
	}
	reverse_proxy %s
}
`, h.db, testKey(1), flagsLine, providers.String(), globals, h.origin, h.origin, identityBody, adminToken, extraSite, strings.TrimPrefix(h.upstream.URL, "http://"))
}

func (h *harness) load(extraSite string) {
	h.t.Helper()
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(h.caddyfile(extraSite)), nil)
	if err != nil {
		h.t.Fatalf("adapting: %v", err)
	}
	if err := caddylog.Load(h.t, cfgJSON); err != nil {
		h.t.Fatalf("loading: %v", err)
	}
	waitUntil(h.t, 10*time.Second, func() bool {
		// A credgate-owned path: a probe through reverse_proxy would leave
		// an idle upstream connection per config, which Caddy keeps.
		resp, err := http.Get(h.origin + "/api/credentials/status")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	h.mu.Lock()
	h.seen = nil // the readiness probes
	h.mu.Unlock()
	// credgate runs on the sandbox's clock, so a test that moves one
	// moves both.
	app, err := caddy.ActiveContext().App("credgate")
	if err != nil {
		h.t.Fatal(err)
	}
	app.(*App).setClock(h.sandbox.Clock().Now)
}

func waitUntil(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client is not on http.DefaultTransport, which every httptest server's
// Close touches (see testhttp).
var client = func() *http.Client {
	c := testhttp.NoRedirects()
	c.Timeout = 30 * time.Second
	return c
}()

func (h *harness) token(user string) string {
	tok, err := SignDevToken(user, devSecret, time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// do sends a request as user ("" = anonymous) with extra headers.
func (h *harness) do(method, path, user string, headers map[string]string) (*http.Response, []byte) {
	h.t.Helper()
	target := path
	if !strings.HasPrefix(path, "http") {
		target = h.origin + path
	}
	req, _ := http.NewRequest(method, target, nil)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+h.token(user))
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	for attempt := 0; err != nil && h.retryTransport && attempt < 3; attempt++ {
		// Caddy's graceful reload can reset a connection the kernel had
		// queued on the old listener; the request never reached a
		// handler, so a browser-style retry is safe.
		h.transportRetries.Add(1)
		time.Sleep(50 * time.Millisecond)
		resp, err = client.Do(req)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body
}

// errorCode reads {"error":{"code"}}.
func errorCode(body []byte) string {
	var e struct {
		Error struct{ Code, Message string }
	}
	json.Unmarshal(body, &e)
	return e.Error.Code
}

// startFlow begins a flow and returns the provider URL and the binding cookie.
func (h *harness) startFlow(user, platform, returnTo string) (string, *http.Cookie) {
	h.t.Helper()
	resp, body := h.do("GET", "/api/auth/oauth/"+platform+"?return_to="+url.QueryEscape(returnTo), user, nil)
	if resp.StatusCode != http.StatusFound {
		h.t.Fatalf("start %s: %d %s", platform, resp.StatusCode, body)
	}
	var binding *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-credgate-"+platform {
			binding = c
		}
	}
	if binding == nil || !binding.Secure || !binding.HttpOnly || binding.SameSite != http.SameSiteLaxMode || binding.Path != "/" {
		h.t.Fatalf("binding cookie: %+v", binding)
	}
	return resp.Header.Get("Location"), binding
}

// authorize follows the provider URL (auto-approved by the sandbox) and
// returns the callback URL the provider sent the browser to.
func (h *harness) authorize(providerURL string) string {
	h.t.Helper()
	resp, err := client.Get(providerURL)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		h.t.Fatalf("provider authorize: %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// callback delivers the provider's redirect to credgate with the cookie.
func (h *harness) callback(callbackURL string, cookie *http.Cookie, user string) (*http.Response, []byte) {
	h.t.Helper()
	headers := map[string]string{}
	if cookie != nil {
		headers["Cookie"] = cookie.Name + "=" + cookie.Value
	}
	return h.do("GET", strings.SplitN(callbackURL, "#", 2)[0], user, headers)
}

// connect runs a whole flow and returns credgate's final redirect.
func (h *harness) connect(user, platform string) string {
	h.t.Helper()
	providerURL, cookie := h.startFlow(user, platform, "/settings")
	resp, body := h.callback(h.authorize(providerURL), cookie, user)
	if resp.StatusCode != http.StatusFound {
		h.t.Fatalf("callback %s: %d %s", platform, resp.StatusCode, body)
	}
	return resp.Header.Get("Location")
}

func (h *harness) count(sql string, args ...any) int {
	h.t.Helper()
	pool := pgtest.Pool(h.t, h.db)
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
	pool.Close()
	return n
}

func (h *harness) upstreamSaw() []upstreamRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]upstreamRequest(nil), h.seen...)
}

func pgDump(t *testing.T, db string) string {
	t.Helper()
	out, err := exec.Command("pg_dump", "--data-only", db).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	return string(out)
}
