package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/internal/flowtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

const (
	origin = "https://app.test"
	alice  = "00000000-0000-4000-8000-00000000000a"
	admin  = "an-admin-token-of-sufficient-length"
)

// newGateway is a Gateway as the credgate handler provisions it, on a
// flowtest.Env, without Caddy. The user is whoever the X-User header names.
func newGateway(t *testing.T, percent int, configure ...func(*pgxpool.Config)) (*gateway.Gateway, *flowtest.Env) {
	t.Helper()
	env := flowtest.New(t, func(p string) string { return origin + "/api/auth/oauth/" + p + "/callback" }, configure...)
	provider, err := flags.Static(percent)
	if err != nil {
		t.Fatal(err)
	}
	rollout := flags.NewRollout(provider)
	if err := rollout.StartAndWait(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rollout.Close(context.Background()) })
	tracer := noop.NewTracerProvider().Tracer("test")
	return &gateway.Gateway{
		PublicOrigin: origin, ReturnToAllow: []string{"/settings"}, StateTTL: 10 * time.Minute, AdminToken: secret.New(admin),
		Providers: env.Providers, LegacyStarts: map[string]*oauth.Provider{}, Flows: env.Flows,
		Accounts: env.Accounts, Keys: env.Keys, DB: env.Pool, Rollout: rollout, Metrics: telemetry.New(), Tracer: tracer,
		Answers: answer.Tracker{Tracer: tracer, Health: telemetry.NewHealth(), Route: func(string, string) string { return telemetry.RouteOther }},
		Logger:  zap.NewNop(), IdentityWatch: new(identity.Watch),
		ReadIdentity: func(_ http.ResponseWriter, r *http.Request, _ identity.Mode) identity.Identity {
			if u := r.Header.Get("X-User"); u != "" {
				return identity.Identity{UserID: u, Result: identity.OK}
			}
			return identity.Identity{Result: identity.Missing}
		},
		Available: func() bool { return true }, Now: time.Now, Halted: func(string) bool { return false },
		InForceRecently: func(ctx context.Context, platform string) flags.InForce { return rollout.InForce(ctx, platform, 0) },
	}, env
}

// serve routes one request as the credgate handler does; a path credgate
// does not own is a 599 here.
func serve(g *gateway.Gateway, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	route := g.Route(r.Method, r.URL.Path)
	if route == nil {
		w.Code = 599
		return w
	}
	route(w, r)
	return w
}

func request(method, target, user string) *http.Request {
	r := httptest.NewRequest(method, origin+target, nil)
	if user != "" {
		r.Header.Set("X-User", user)
	}
	return r
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct{ Error struct{ Code string } }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("%d %q is not credgate's error body: %v", w.Code, w.Body, err)
	}
	return body.Error.Code
}

// A whole connect through the routes, without Caddy: the start sets the
// browser's binding and sends it to the platform; the callback, from that
// browser, stores the account and returns to the app; status shows it;
// a disconnect from the app's own page revokes it.
func TestAConnectThroughTheRoutes(t *testing.T) {
	t.Parallel()
	g, _ := newGateway(t, 100)
	w := serve(g, request("GET", "/api/auth/oauth/twitter?return_to=/settings/accounts", alice))
	if w.Code != http.StatusFound {
		t.Fatalf("start: %d %s", w.Code, w.Body)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != "__Host-credgate-twitter" || !cookies[0].Secure || !cookies[0].HttpOnly {
		t.Fatalf("start's binding cookie: %+v", cookies)
	}
	callback := flowtest.Authorize(t, w.Header().Get("Location"), alice)
	if !strings.HasSuffix(callback.Path, "/api/auth/oauth/twitter/callback") {
		t.Fatalf("the platform's answer: %s", callback)
	}
	cb := request("GET", callback.RequestURI(), alice)
	cb.AddCookie(cookies[0])
	w = serve(g, cb)
	if w.Code != http.StatusFound || w.Header().Get("Location") != "/settings/accounts?connected=twitter" {
		t.Fatalf("callback: %d %q %s", w.Code, w.Header().Get("Location"), w.Body)
	}
	w = serve(g, request("GET", "/api/credentials/status", alice))
	var status struct{ Accounts []gateway.AccountView }
	json.Unmarshal(w.Body.Bytes(), &status)
	if w.Code != http.StatusOK || len(status.Accounts) != 1 || status.Accounts[0].Status != "connected" || status.Accounts[0].ConnectedVia != "credgate" {
		t.Fatalf("status: %d %s", w.Code, w.Body)
	}
	// The same callback again is refused: a state works once.
	again := request("GET", callback.RequestURI(), alice)
	again.AddCookie(cookies[0])
	if w := serve(g, again); w.Code != http.StatusBadRequest {
		t.Errorf("the callback replayed: %d %s", w.Code, w.Body)
	}
	cross := request("DELETE", "/api/credentials/twitter/disconnect", alice)
	cross.Header.Set("Origin", "https://evil.test")
	if w := serve(g, cross); w.Code != http.StatusForbidden || errorCode(t, w) != "cross_origin" {
		t.Errorf("a disconnect from another origin: %d %s", w.Code, w.Body)
	}
	own := request("DELETE", "/api/credentials/twitter/disconnect", alice)
	own.Header.Set("Origin", origin)
	if w := serve(g, own); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"disconnected":true`) {
		t.Fatalf("disconnect: %d %s", w.Code, w.Body)
	}
	w = serve(g, request("GET", "/api/credentials/status", alice))
	if strings.Contains(w.Body.String(), `"status":"connected"`) {
		t.Errorf("status after the disconnect: %s", w.Body)
	}
}

// What the routes refuse, each with its status and code, before they
// write a state row: nothing of a refused start reaches the database.
func TestTheRoutesRefuseBadRequestsWithTheirCodes(t *testing.T) {
	t.Parallel()
	g, _ := newGateway(t, 100)
	crossSite := request("GET", "/api/auth/oauth/twitter", alice)
	crossSite.Header.Set("Sec-Fetch-Site", "cross-site")
	for _, c := range []struct {
		name   string
		r      *http.Request
		status int
		code   string
	}{
		{"no user", request("GET", "/api/auth/oauth/twitter", ""), 401, "unauthenticated"},
		{"unknown platform", request("GET", "/api/auth/oauth/myspace", alice), 404, "unknown_platform"},
		{"another site's page", crossSite, 403, "cross_origin"},
		{"return_to off the site", request("GET", "/api/auth/oauth/twitter?return_to=//evil.test/", alice), 400, "invalid_return_to"},
		{"return_to outside the allowed prefixes", request("GET", "/api/auth/oauth/twitter?return_to=/admin", alice), 400, "invalid_return_to"},
		{"a method the route does not take", request("POST", "/api/credentials/status", alice), 405, "method_not_allowed"},
		{"the token API on the public origin", request("GET", "/api/internal/credentials/x/twitter/token", alice), 404, "not_found"},
		{"cleanup without the admin token", request("POST", "/api/maintenance/cleanup", alice), 401, "unauthorized"},
	} {
		w := serve(g, c.r)
		if w.Code != c.status || errorCode(t, w) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Body, c.status, c.code)
		}
	}
	var states int
	if err := g.DB.QueryRow(t.Context(), `SELECT count(*) FROM oauth_states`).Scan(&states); err != nil || states != 0 {
		t.Errorf("%d state rows after refused starts (%v)", states, err)
	}
	if w := serve(g, request("GET", "/api/posts", alice)); w.Code != 599 {
		t.Errorf("a path credgate does not own was routed: %d", w.Code)
	}
	g.Available = func() bool { return false }
	if w := serve(g, request("GET", "/api/auth/oauth/twitter", alice)); w.Code != 503 || errorCode(t, w) != "unavailable" {
		t.Errorf("storage unavailable: %d %s", w.Code, w.Body)
	}
	cleanup := request("POST", "/api/maintenance/cleanup", "")
	cleanup.Header.Set("Authorization", "Bearer "+admin)
	if w := serve(g, cleanup); w.Code != 503 {
		t.Errorf("cleanup while storage is unavailable: %d %s", w.Code, w.Body)
	}
	g.Available = func() bool { return true }
	if w := serve(g, cleanup); w.Code != 200 || !strings.Contains(w.Body.String(), `"deleted":0`) {
		t.Errorf("cleanup: %d %s", w.Code, w.Body)
	}
}

// The rollout decides a connect the same way for the app's connect route
// and the decision route: at 0 % everyone stays with the app, at 100 %
// everyone goes to the new start route; with legacy off nothing is
// asked. The kill switch off closes the new start route itself.
func TestTheRolloutDecidesEachConnect(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		percent   int
		legacyOff bool
		arm       flags.Arm
		reason    flags.Reason
	}{
		{0, false, flags.ArmLegacy, ""},
		{100, false, flags.ArmNew, ""},
		{0, true, flags.ArmNew, "legacy_off"},
	} {
		g, _ := newGateway(t, c.percent)
		g.LegacyOff = c.legacyOff
		r := request("GET", "/api/twitter/connect", alice)
		d, user := g.DecideConnect(httptest.NewRecorder(), r, "twitter")
		if d.Arm != c.arm || (c.reason != "" && d.Reason != c.reason) {
			t.Errorf("%d %% legacy off %v: %+v", c.percent, c.legacyOff, d)
		}
		if !c.legacyOff && user != alice {
			t.Errorf("%d %%: decided for %q", c.percent, user)
		}
		w := serve(g, request("GET", "/api/credentials/rollout/twitter?return_to=/settings", alice))
		var view struct {
			Flow     flags.Arm
			Location *string
		}
		json.Unmarshal(w.Body.Bytes(), &view)
		if w.Code != 200 || view.Flow != c.arm {
			t.Errorf("%d %%: the decision route: %d %s", c.percent, w.Code, w.Body)
		}
		if c.arm == flags.ArmNew && (view.Location == nil || *view.Location != gateway.NewStartTarget("twitter", "/settings")) {
			t.Errorf("%d %%: the new arm's location: %s", c.percent, w.Body)
		}
	}
	g, _ := newGateway(t, 0) // the static source at 0 % has its kill switch off
	if w := serve(g, request("GET", "/api/auth/oauth/twitter?return_to=/settings", alice)); w.Code != http.StatusFound ||
		!strings.Contains(w.Header().Get("Location"), "oauth_error=new_flow_disabled") {
		t.Errorf("a start with the kill switch off: %d %q", w.Code, w.Header().Get("Location"))
	}
}

// roundTrips counts what each statement and batch costs: one round trip
// to PostgreSQL each (BEGIN and COMMIT included).
type roundTrips struct{ n atomic.Int64 }

func (c *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// The round trips of one connect today (docs/performance.md): raise them
// only on purpose.
const maxStartRoundTrips, maxCallbackRoundTrips = 1, 2

// TestRoundTripsPerConnect counts the database round trips of one whole
// connect, by route, on the gateway's own pool (nothing else uses it), for
// docs/performance.md. It fails when a change adds one.
func TestRoundTripsPerConnect(t *testing.T) {
	t.Parallel()
	counter := new(roundTrips)
	g, env := newGateway(t, 100, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter })
	// The settings as an instance caches them: read by the first store,
	// not by every one (flowtest reads them each time).
	env.Accounts.UseSettings(&vault.SettingsCache{DB: env.Pool, TTL: time.Minute})
	// The fewest of three connects: the first also reads the settings.
	start, callback := int64(1<<30), int64(1<<30)
	for i := range 3 {
		user := fmt.Sprintf("00000000-0000-4000-8000-%012d", 900+i)
		counter.n.Store(0)
		w := serve(g, request("GET", "/api/auth/oauth/twitter?return_to=/settings", user))
		s := counter.n.Swap(0)
		if w.Code != http.StatusFound {
			t.Fatalf("start: %d %s", w.Code, w.Body)
		}
		cb := request("GET", flowtest.Authorize(t, w.Header().Get("Location"), user).RequestURI(), user)
		cb.AddCookie(w.Result().Cookies()[0])
		counter.n.Store(0)
		w = serve(g, cb)
		c := counter.n.Load()
		if w.Code != http.StatusFound || !strings.Contains(w.Header().Get("Location"), "connected=twitter") {
			t.Fatalf("callback: %d %q %s", w.Code, w.Header().Get("Location"), w.Body)
		}
		start, callback = min(start, s), min(callback, c)
	}
	t.Logf("round trips: start %d, callback %d, whole connect %d", start, callback, start+callback)
	if start > maxStartRoundTrips || callback > maxCallbackRoundTrips || start == 0 || callback == 0 {
		t.Fatalf("round trips: start %d (max %d), callback %d (max %d)", start, maxStartRoundTrips, callback, maxCallbackRoundTrips)
	}
}

// The admin rollout routes: the status of every platform, and a resume
// that says what it could not do.
func TestTheAdminRolloutRoutes(t *testing.T) {
	t.Parallel()
	g, _ := newGateway(t, 100)
	asAdmin := func(method, target, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, origin+target, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+admin)
		return serve(g, r)
	}
	if w := serve(g, request("GET", "/api/credentials/rollout", alice)); w.Code != 401 || errorCode(t, w) != "unauthorized" {
		t.Errorf("status without the admin token: %d %s", w.Code, w.Body)
	}
	w := asAdmin("GET", "/api/credentials/rollout", "")
	var status struct {
		Guard     map[string]any
		Platforms []struct{ Platform string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &status); w.Code != 200 || err != nil || len(status.Platforms) != len(g.Providers) || status.Guard["enabled"] != false {
		t.Errorf("status: %d %s", w.Code, w.Body)
	}
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"platform": "twitter", "by": "alice"}`, 409, "not_halted"},
		{`{"platform": "myspace"}`, 404, "unknown_platform"},
		{`not json`, 400, "invalid_request"},
	} {
		if w := asAdmin("POST", "/api/credentials/rollout/resume", c.body); w.Code != c.status || errorCode(t, w) != c.code {
			t.Errorf("resume %s: %d %s, want %d %s", c.body, w.Code, w.Body, c.status, c.code)
		}
	}
}
