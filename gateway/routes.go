package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/backend"
	"github.com/credgate/credgate/connect"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Every route credgate owns, in one place:
//
//	GET    /api/auth/oauth/{platform}              start a flow (PKCE, state row) → 302 to the provider
//	GET    /api/auth/oauth/{platform}/callback     finish a flow
//	GET    /api/credentials/status                 this user's connections
//	DELETE /api/credentials/{platform}/disconnect  revoke, wipe, audit
//	GET    /api/credentials/health-check           this user's credential health
//	GET    /api/credentials/service-health         (admin) database, keys, flags, providers
//	POST   /api/maintenance/cleanup                (admin) delete expired states
//	GET    /api/credentials/rollout                (admin) percentage, kill switch, guard, windowed success per platform
//	POST   /api/credentials/rollout/resume         (admin) clear a guard halt: {"platform": "…", "by": "…"}
//	GET    /api/credentials/rollout/{platform}     this user's rollout decision and where to send the browser (rollout.go)
//	*      /api/internal/credentials/…             404: the token API (credgate_tokens) is never public
//
// Anything else under /api/ goes to the next handler.
func (g *Gateway) Route(method, path string) http.HandlerFunc {
	if strings.HasPrefix(path, backend.TokenRoutePrefix) {
		return func(w http.ResponseWriter, r *http.Request) {
			answer.Error(w, http.StatusNotFound, "not_found", "not found")
		}
	}
	rest, ok := strings.CutPrefix(path, "/api/auth/oauth/")
	if ok {
		platform, tail, _ := strings.Cut(rest, "/")
		switch tail {
		case "":
			return g.methods(map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, r *http.Request) { g.start(w, r, platform) }})
		case "callback":
			return g.methods(map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, r *http.Request) { g.callback(w, r, platform) }})
		}
		return nil
	}
	switch path {
	case "/api/credentials/status":
		return g.methods(map[string]http.HandlerFunc{http.MethodGet: g.status})
	case "/api/credentials/health-check":
		return g.methods(map[string]http.HandlerFunc{http.MethodGet: g.healthCheck})
	case "/api/credentials/service-health":
		return g.methods(map[string]http.HandlerFunc{http.MethodGet: g.ServiceHealth})
	case "/api/maintenance/cleanup":
		return g.methods(map[string]http.HandlerFunc{http.MethodPost: g.cleanup})
	case "/api/credentials/rollout":
		return g.methods(map[string]http.HandlerFunc{http.MethodGet: g.rolloutStatus})
	case "/api/credentials/rollout/resume":
		return g.methods(map[string]http.HandlerFunc{http.MethodPost: g.rolloutResume})
	}
	if platform, ok := strings.CutPrefix(path, RolloutDecisionPrefix); ok && platform != "" && !strings.Contains(platform, "/") {
		return g.methods(map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, r *http.Request) { g.rolloutDecision(w, r, platform) }})
	}
	if rest, ok := strings.CutPrefix(path, "/api/credentials/"); ok {
		if platform, ok := strings.CutSuffix(rest, "/disconnect"); ok && !strings.Contains(platform, "/") {
			return g.methods(map[string]http.HandlerFunc{http.MethodDelete: func(w http.ResponseWriter, r *http.Request) { g.disconnect(w, r, platform) }})
		}
	}
	return nil
}

// methods answers 405 with an Allow header for any other method.
func (g *Gateway) methods(byMethod map[string]http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f, ok := byMethod[r.Method]; ok {
			f(w, r)
			return
		}
		for m := range byMethod {
			w.Header().Set("Allow", m)
		}
		answer.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
	}
}

// Ready answers 503 while the database is unreachable or the key check
// has not passed.
func (g *Gateway) Ready(w http.ResponseWriter) bool {
	if !g.Available() {
		answer.Error(w, http.StatusServiceUnavailable, "unavailable", "credential storage is temporarily unavailable")
		return false
	}
	return true
}

// identify reads the request's identity; route, when not "", names a
// Route whose identity outcomes are counted (credgate_identity_total).
func (g *Gateway) identify(w http.ResponseWriter, r *http.Request, route string) identity.Identity {
	mode := identity.MayRefresh
	if route == telemetry.RouteConnect {
		// The app's connect route may hand the request to the app
		// untouched: credgate names a stale session's user for the
		// decision, and refreshes it only on its own start route.
		mode = identity.NoRefresh
	}
	got := identity.Identity{Result: identity.Missing}
	if g.ReadIdentity != nil {
		got = g.ReadIdentity(w, r, mode)
	}
	switch {
	case got.Anomaly:
		g.Logger.Warn("identity: supabase auth answered a refresh with another user's session; the request is treated as signed out", zap.String("route", route))
	case got.RefreshErr != nil:
		g.Logger.Debug("identity: refreshing the session failed", zap.String("route", route), zap.Error(got.RefreshErr))
	}
	if route != "" {
		g.Metrics.Identity(route, string(got.Result))
	}
	return got
}

// requireUser answers 401 JSON when the request has no identity.
func (g *Gateway) requireUser(w http.ResponseWriter, r *http.Request) (string, bool) {
	user := g.identify(w, r, "").UserID
	if user == "" {
		answer.Error(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
		return "", false
	}
	return user, true
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json") || r.Header.Get("X-Requested-With") == "XMLHttpRequest"
}

// bindingCookie is per platform, so two flows started in two tabs do not
// overwrite each other's binding.
func bindingCookie(platform string) string { return "__Host-credgate-" + platform }

// validReturnTo accepts only a same-origin relative path under an allowed
// prefix: no scheme, no host, no "//" or "\" tricks, no control bytes.
func (g *Gateway) validReturnTo(raw string) (string, bool) {
	return ValidReturnTo(g.ReturnToAllow, raw)
}

// ValidReturnTo is validReturnTo for the prefixes allow (at least one).
func ValidReturnTo(allow []string, raw string) (string, bool) {
	if raw == "" {
		return allow[0], true
	}
	if len(raw) > 2048 || !strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, "//") ||
		strings.ContainsAny(raw, "\\\x00\r\n\t") {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.Contains(u.Path, "/../") || strings.HasSuffix(u.Path, "/..") {
		return "", false
	}
	for _, prefix := range allow {
		base := strings.TrimSuffix(prefix, "/")
		// Whole path segments: /settings allows /settings/x, not /settingsx.
		if base == "" || u.Path == base || strings.HasPrefix(u.Path, base+"/") {
			return u.RequestURI(), true
		}
	}
	return "", false
}

// start: GET /api/auth/oauth/{platform}?return_to=…
func (g *Gateway) start(w http.ResponseWriter, r *http.Request, platform string) {
	p, ok := g.Providers[platform]
	if !ok {
		answer.Error(w, http.StatusNotFound, "unknown_platform", "no such platform is configured")
		return
	}
	// A cross-site page must not start flows for the user: it would write
	// state rows and replace the binding cookie of a flow in another tab.
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		answer.Error(w, http.StatusForbidden, "cross_origin", "start the connection from the app's own pages")
		return
	}
	user := g.identify(w, r, telemetry.RouteStart).UserID
	if user == "" {
		if g.LoginURL != "" && !wantsJSON(r) {
			answer.Redirect(w, r, g.LoginURL, url.Values{"return_to": {r.URL.RequestURI()}})
			return
		}
		answer.Error(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
		return
	}
	returnTo, ok := g.validReturnTo(r.URL.Query().Get("return_to"))
	if !ok {
		answer.Error(w, http.StatusBadRequest, "invalid_return_to", "return_to must be a path on this site under an allowed prefix")
		return
	}
	if code, message := g.newStartsStopped(r.Context(), platform); code != "" {
		// The app's page can act on either: show the message, or send the
		// user through its own connect route (the legacy flow).
		g.Logger.Debug("start refused: new starts are stopped", zap.String("platform", platform), zap.String("code", code))
		if wantsJSON(r) {
			answer.Error(w, http.StatusConflict, code, message)
			return
		}
		answer.Redirect(w, r, returnTo, url.Values{"oauth_error": {code}, "platform": {platform}})
		return
	}
	if g.StartLimit != nil {
		if ok, wait := g.StartLimit.Allow(user+"/"+platform, time.Now()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second).Seconds())))
			answer.Error(w, http.StatusTooManyRequests, "too_many_requests", "too many sign-in attempts; try again in a minute")
			return
		}
	}
	if !g.Ready(w) {
		return
	}
	ttl := time.Duration(g.StateTTL)
	flow, err := g.Flows.Begin(r.Context(), p, user, returnTo, ttl)
	if err != nil {
		answer.StoreError(g.Logger, w, r, "starting a flow", err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: bindingCookie(platform), Value: flow.Binding.Reveal(), Path: "/",
		MaxAge: int(ttl.Seconds()), Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, flow.URL, http.StatusFound)
}

// newStartsStopped says why credgate's own start route must not begin a
// flow on platform now, or "": the kill switch (oauth-new-flow-enabled)
// is off, or the guard halted the platform. The app's connect route
// applies both through the rollout's decision; a link straight to the
// start route must not get around them. Flows already started finish
// (their callbacks follow their state). With legacy off there is no
// other flow to send users to, and the connect route does not consult
// the rollout either: nothing is stopped. The kill switch is read as the
// flag source states it for the platform (without a flags option, the
// static 0 %: off), and counts only when the source answers within
// decision_timeout: a source that is starting, failing or slow leaves
// the start route open, as it was.
func (g *Gateway) newStartsStopped(ctx context.Context, platform string) (code, message string) {
	if g.LegacyOff {
		return "", ""
	}
	if g.Halted(platform) {
		return "new_flow_halted", "new connections on this platform are paused; connect through the app's own flow"
	}
	budget := time.Duration(g.DecisionTimeout)
	if budget <= 0 {
		budget = flags.DefaultDecisionTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	if in := g.Rollout.InForce(ctx, platform, 0); in.Ready && in.Problem == "" && !in.KillSwitchOn {
		return "new_flow_disabled", "the new connection flow is switched off; connect through the app's own flow"
	}
	return "", ""
}

// callback: GET /api/auth/oauth/{platform}/callback?code&state (or error).
func (g *Gateway) callback(w http.ResponseWriter, r *http.Request, platform string) {
	p, ok := g.Providers[platform]
	if !ok {
		answer.Error(w, http.StatusNotFound, "unknown_platform", "no such platform is configured")
		return
	}
	g.Finish(w, r, p, r.URL.Query().Get("state"))
}

// Finish completes a flow credgate started (connect.Flows.Finish) and
// answers as it ended: 400 for a callback this browser may not finish,
// else back to the flow's return path with connected=<platform> or
// oauth_error=<code>. Shared by the new callback and the legacy one.
func (g *Gateway) Finish(w http.ResponseWriter, r *http.Request, p *oauth.Provider, rawState string) {
	if !g.Ready(w) {
		return
	}
	cb := connect.Callback{Provider: p, State: rawState, Query: r.URL.Query()}
	// Who is signed in, before the database's budget starts: reading it
	// may wait for a JWKS or a session refresh.
	cb.SignedIn = g.identify(w, r, "").UserID
	platform := p.Name()
	if cookie, err := r.Cookie(bindingCookie(platform)); err == nil {
		cb.Binding = secret.New(cookie.Value)
	}
	res := g.Flows.Finish(r.Context(), cb)
	if res.ClearBinding {
		http.SetCookie(w, &http.Cookie{Name: bindingCookie(platform), Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	switch res.Kind {
	case connect.Unavailable:
		answer.StoreError(g.Logger, w, r, "consuming oauth state", res.Err)
	case connect.Refused:
		answer.Error(w, http.StatusBadRequest, res.Code, res.Message)
	case connect.Failed:
		answer.Redirect(w, r, res.ReturnTo, url.Values{"oauth_error": {res.Code}, "platform": {platform}})
	default:
		answer.Redirect(w, r, res.ReturnTo, url.Values{"connected": {platform}})
	}
}

// AccountView is what the status endpoint shows of an account: no secret.
type AccountView struct {
	Platform        string     `json:"platform"`
	Status          string     `json:"status"`
	Username        string     `json:"username,omitempty"`
	ExpiresAt       *time.Time `json:"expires_at"`
	LastRefreshedAt *time.Time `json:"last_refreshed_at"`
	ConnectedVia    string     `json:"connected_via"`
}

// userAccounts answers for the status and health-check routes: the
// signed-in user's accounts, or false once an error response is written.
func (g *Gateway) userAccounts(ctx context.Context, w http.ResponseWriter, r *http.Request) (string, []vault.Account, bool) {
	user, ok := g.requireUser(w, r)
	if !ok || !g.Ready(w) {
		return "", nil, false
	}
	accounts, err := g.Accounts.List(ctx, g.DB, user)
	if err != nil {
		answer.StoreError(g.Logger, w, r, "listing accounts", err)
		return "", nil, false
	}
	return user, accounts, true
}

// status: GET /api/credentials/status
func (g *Gateway) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), connect.DBTimeout)
	defer cancel()
	_, accounts, ok := g.userAccounts(ctx, w, r)
	if !ok {
		return
	}
	views := []AccountView{}
	for _, a := range accounts {
		views = append(views, AccountView{Platform: a.Platform, Status: string(a.Status), Username: a.Username,
			ExpiresAt: a.ExpiresAt, LastRefreshedAt: a.LastRefreshedAt, ConnectedVia: string(a.ConnectedVia)})
	}
	answer.JSON(w, http.StatusOK, map[string]any{"accounts": views})
}

// disconnect: DELETE /api/credentials/{platform}/disconnect
func (g *Gateway) disconnect(w http.ResponseWriter, r *http.Request, platform string) {
	// Before anything else, and before any database call: a name that is
	// not a configured platform (a NUL, invalid UTF-8, a typo) is a 404.
	p, configured := g.Providers[platform]
	if !configured {
		answer.Error(w, http.StatusNotFound, "unknown_platform", "no such platform is configured")
		return
	}
	user, ok := g.requireUser(w, r)
	if !ok {
		return
	}
	if !g.sameOrigin(r) {
		answer.Error(w, http.StatusForbidden, "cross_origin", "this request must come from the app's own pages")
		return
	}
	if !g.Ready(w) {
		return
	}
	revoked, err := g.Flows.Disconnect(r.Context(), p, user)
	if errors.Is(err, vault.ErrNotConnected) {
		answer.Error(w, http.StatusNotFound, "not_connected", "this platform is not connected")
		return
	}
	if err != nil {
		answer.StoreError(g.Logger, w, r, "disconnecting", err)
		return
	}
	answer.JSON(w, http.StatusOK, map[string]any{"platform": platform, "disconnected": true, "revoked": revoked})
}

// healthCheck: GET /api/credentials/health-check (connect.Flows.Health).
func (g *Gateway) healthCheck(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), connect.DBTimeout)
	defer cancel()
	user, ok := g.requireUser(w, r)
	if !ok || !g.Ready(w) {
		return
	}
	accounts, err := g.Flows.Health(ctx, user, g.Now())
	if err != nil {
		answer.StoreError(g.Logger, w, r, "health check", err)
		return
	}
	answer.JSON(w, http.StatusOK, map[string]any{"accounts": accounts})
}

// IdentityHealth is the connect route's last minute of identity
// results. Like a guard halt, users going unrecognised does not make
// credgate unhealthy (it serves them through the app), but it is
// named: it is why a rollout moves no one.
func (g *Gateway) IdentityHealth() map[string]any {
	v := g.IdentityWatch.View(time.Now())
	out := map[string]any{"window": identity.WatchEvery.String(), "connect_requests": v.Requests,
		"recognised": v.Usable, "unrecognised_share": v.UnusableShare, "by_result": v.ByResult}
	if v.Commonest != "" {
		out["commonest_reason"] = v.Commonest
	}
	if v.MostlyUnrecognised() {
		out["warning"] = unrecognisedWarning
	}
	return out
}

// adminReady answers 401 without the admin token, and 503 while the
// database is not available; true when an admin route may go on.
func (g *Gateway) adminReady(w http.ResponseWriter, r *http.Request) bool {
	if !g.AdminAllowed(r) {
		answer.Error(w, http.StatusUnauthorized, "unauthorized", "admin token required")
		return false
	}
	return g.Ready(w)
}

// cleanup: POST /api/maintenance/cleanup (admin), the guide's Step 5.2.
func (g *Gateway) cleanup(w http.ResponseWriter, r *http.Request) {
	if !g.adminReady(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res, err := worker.Cleanup(ctx, g.DB, g.Now(), "api", true)
	if err != nil {
		answer.StoreError(g.Logger, w, r, "cleaning up states", err)
		return
	}
	deleted := res.States
	g.Metrics.StatesCleaned(deleted)
	g.Logger.Info("cleaned up expired oauth states", zap.Int64("deleted", deleted))
	answer.JSON(w, http.StatusOK, map[string]any{"deleted": deleted})
}

// RouteSpan names the span of a credgate route, with the platform and
// flow its path names (closed sets: the path was routed).
func RouteSpan(path string) (name, platform, flow string) {
	if rest, ok := strings.CutPrefix(path, "/api/auth/oauth/"); ok {
		platform, tail, _ := strings.Cut(rest, "/")
		if tail == "callback" {
			return "credgate.oauth.callback", platform, string(flags.ArmNew)
		}
		return "credgate.oauth.start", platform, string(flags.ArmNew)
	}
	if rest, ok := strings.CutPrefix(path, "/api/credentials/"); ok {
		if platform, ok := strings.CutSuffix(rest, "/disconnect"); ok {
			return "credgate.disconnect", platform, ""
		}
	}
	return "credgate.api", "", ""
}

// AdminAllowed checks "Authorization: Bearer <admin token>" in constant
// time; without a configured token nobody is admin.
func (g *Gateway) AdminAllowed(r *http.Request) bool { return answer.BearerMatches(r, g.AdminToken) }

// sameOrigin accepts a state-changing request only from the app's own
// pages: Origin equal to public_origin, or Sec-Fetch-Site same-origin.
func (g *Gateway) sameOrigin(r *http.Request) bool {
	if origin := r.Header.Get("Origin"); origin != "" {
		return origin == g.PublicOrigin
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}
