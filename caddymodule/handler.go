package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/internal/ratelimit"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the credgate HTTP handler: it serves the new OAuth and
// credential routes (package gateway) and passes everything else to the next
// handler untouched, with no database access, no body read and no header
// change.
type Handler struct {
	// Identity says how to learn the user id. Required for the routes
	// that act for a user.
	Identity *Identity `json:"identity,omitempty"`

	// ReturnToAllow lists the path prefixes a flow may return to.
	// Default ["/"].
	ReturnToAllow []string `json:"return_to_allow,omitempty"`

	// LoginURL is where a browser without a session is sent when it
	// starts a flow. Default: none (401 JSON).
	LoginURL string `json:"login_url,omitempty"`

	// AdminToken guards /api/maintenance/cleanup and
	// /api/credentials/service-health ("Authorization: Bearer <token>"),
	// normally "{env.CREDGATE_ADMIN_TOKEN}". Default: none, and those
	// routes answer 401 to every call.
	AdminToken string `json:"admin_token,omitempty"`

	// PublicOrigin is the app's origin as browsers see it, such as
	// "https://app.example.com". It builds the default redirect URLs and
	// is the origin state-changing requests must come from. Required.
	PublicOrigin string `json:"public_origin,omitempty"`

	// Legacy is "on" (the default) while the app's own OAuth routes are
	// alive: credgate takes over only the flows it started and passes the
	// rest on. "off" is the cutover (guide Phase 5.3, "remove old
	// routes"): credgate answers the legacy routes itself, every start
	// goes to the new flow, and an unknown state on a legacy callback is
	// invalid_state. Turning it back on (a config reload) restores the
	// fall-through: the rollback.
	Legacy string `json:"legacy,omitempty"`

	// LegacyCallback is the path of the app's own OAuth callback, with
	// {platform} replaced by each platform's name. Default
	// "/api/{platform}/callback". A provider block can override it.
	LegacyCallback string `json:"legacy_callback,omitempty"`

	// LegacyStart is the path of the app's own "connect" entry point,
	// with {platform} replaced. There the rollout decides, per user,
	// between the app (legacy) and a 302 to the new start route. Default:
	// none, and the app's start route is not intercepted.
	LegacyStart string `json:"legacy_start,omitempty"`

	// LegacyReturnTo is where flows begun at the legacy start route
	// return. Default: the path of a same-origin Referer, else "/".
	LegacyReturnTo string `json:"legacy_return_to,omitempty"`

	// LegacyErrorPattern is a regular expression matched against the
	// Location of the app's answer to its callback: a redirect that
	// matches is the app reporting a failed connection, counted as the
	// legacy arm's failure (app_error_redirect). Default: an error or
	// oauth_error query parameter, `[?&](error|oauth_error)=`.
	LegacyErrorPattern string `json:"legacy_error_pattern,omitempty"`

	// StartLimit bounds how many flows one user may start per platform:
	// "<n>/<duration>" (default "10/1m"), or "off". Past it the start
	// route answers 429 too_many_requests with Retry-After. Each start
	// writes a state row and an append-only audit row; the limit is per
	// instance, so N replicas allow up to N times as many.
	StartLimit string `json:"start_limit,omitempty"`

	// ServerErrors says who answers credgate's own 5xx on these routes:
	// "json" (the default) writes credgate's JSON error body; "caddy"
	// returns the error to Caddy instead, for the site's handle_errors
	// (server_errors.go).
	ServerErrors string `json:"server_errors,omitempty"`

	app *App
	// gw serves credgate's own routes (package gateway), and holds the
	// options above as provisioned, the providers and the app's connect
	// routes (LegacyStarts) included.
	gw     *gateway.Gateway
	logger *zap.Logger

	legacyCallbacks map[string]*oauth.Provider // by exact path
	// legacyOutsideAPI is true when a legacy path does not start with
	// /api/, so the pass-through fast path must look it up.
	legacyOutsideAPI bool
}

// defaultStartLimit is 10 starts per user and platform per minute: far
// above what a person clicking "connect" does, far below a script.
const defaultStartLimit = "10/1m"

// parseStartLimit reads "<n>/<duration>" or "off".
func parseStartLimit(raw string) (*ratelimit.Limiter, error) {
	if raw == "" {
		raw = defaultStartLimit
	}
	if raw == "off" {
		return nil, nil
	}
	n, per, ok := strings.Cut(raw, "/")
	burst, err := strconv.Atoi(n)
	d, derr := caddy.ParseDuration(per)
	if !ok || err != nil || burst < 1 || derr != nil || d <= 0 {
		return nil, fmt.Errorf("credgate handler: start_limit must be <n>/<duration> such as 10/1m, or off; got %q", raw)
	}
	return ratelimit.New(burst, d), nil
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.credgate",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision binds the handler to the credgate app and builds one OAuth
// provider per configured platform. No network.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	app, err := credgateApp(ctx, "credgate handler")
	if err != nil {
		return err
	}
	h.app = app
	// The connect steps log as this handler.
	g := &gateway.Gateway{Flows: app.flows.WithLogger(h.logger), Accounts: app.accounts, Keys: app.keys, DB: app.pool,
		Rollout: app.rollout, Metrics: app.metrics, Tracer: app.tracer(), Answers: app.answers(), Logger: h.logger,
		IdentityWatch: new(identity.Watch), Available: app.Available, Now: app.now, Halted: app.halted,
		InForceRecently: app.inForceRecently, StateTTL: time.Duration(app.StateTTL), DecisionTimeout: time.Duration(app.DecisionTimeout),
		Guard: app.guard, ExactPercentages: app.exactPercentages, ServiceHealth: h.serviceHealth}
	h.gw = g
	repl := caddy.NewReplacer()
	g.AdminToken = secret.New(repl.ReplaceKnown(h.AdminToken, ""))
	h.PublicOrigin = strings.TrimRight(repl.ReplaceKnown(h.PublicOrigin, ""), "/")
	u, err := url.Parse(h.PublicOrigin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
		return fmt.Errorf("credgate handler: public_origin must be an origin such as https://app.example.com, got %q", h.PublicOrigin)
	}
	// The binding cookie is __Host- and Secure: browsers accept it over
	// plain http only from localhost.
	if host := u.Hostname(); u.Scheme == "http" && host != "localhost" && host != "127.0.0.1" && host != "::1" {
		return fmt.Errorf("credgate handler: public_origin %q must be https (plain http works only for localhost)", h.PublicOrigin)
	}
	// A public origin with a published or short secret is refused at
	// Start (secret.Exposure), once every handler of the config has said.
	app.run.exposure.NoteOrigin(h.PublicOrigin)
	app.run.exposure.NoteSecret("credgate handler", "admin_token", g.AdminToken.Reveal(), secret.MinAdminToken)
	app.warnLiteral("credgate handler", "admin_token", h.AdminToken)
	if h.Identity != nil {
		app.run.exposure.NoteSecret("credgate identity", "jwt_secret", repl.ReplaceKnown(h.Identity.JWTSecret, ""), 0)
		app.warnLiteral("credgate identity", "jwt_secret", h.Identity.JWTSecret)
		if err := h.Identity.provision(ctx); err != nil {
			return err
		}
		g.ReadIdentity = h.Identity.read
	}
	if len(h.ReturnToAllow) == 0 {
		h.ReturnToAllow = []string{"/"}
	}
	if g.StartLimit, err = parseStartLimit(h.StartLimit); err != nil {
		return err
	}
	g.LegacyOff = h.Legacy == "off"
	if h.LegacyCallback == "" {
		h.LegacyCallback = "/api/{platform}/callback"
	}
	if h.LegacyErrorPattern == "" {
		h.LegacyErrorPattern = gateway.DefaultLegacyErrorPattern
	}
	if g.LegacyError, err = regexp.Compile(h.LegacyErrorPattern); err != nil {
		return fmt.Errorf("credgate handler: legacy_error_pattern is not a regular expression: %v", err)
	}
	g.PublicOrigin, g.ReturnToAllow, g.LoginURL, g.LegacyReturnTo = h.PublicOrigin, h.ReturnToAllow, h.LoginURL, h.LegacyReturnTo
	if err := h.provisionRoutes(repl); err != nil {
		return err
	}
	return nil
}

// Validate checks the options that need nothing provisioned (Caddy calls
// it after Provision).
func (h *Handler) Validate() error {
	for _, p := range h.ReturnToAllow {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("credgate handler: return_to_allow entries are paths starting with /, got %q", p)
		}
	}
	if err := checkServerErrors("credgate handler", h.ServerErrors); err != nil {
		return err
	}
	switch h.Legacy {
	case "", "on", "off":
	default:
		return fmt.Errorf("credgate handler: legacy must be on or off, got %q", h.Legacy)
	}
	if h.LegacyReturnTo != "" {
		if _, ok := gateway.ValidReturnTo(h.ReturnToAllow, h.LegacyReturnTo); !ok {
			return fmt.Errorf("credgate handler: legacy_return_to must be a path under return_to_allow, got %q", h.LegacyReturnTo)
		}
	}
	return nil
}

// provisionRoutes builds one OAuth provider per configured platform,
// with its callback on public_origin, and the table of the app's own
// routes credgate stands in front of (legacy_callback, legacy_start, per
// platform or from the patterns).
func (h *Handler) provisionRoutes(repl *caddy.Replacer) error {
	h.gw.Providers = map[string]*oauth.Provider{}
	h.legacyCallbacks = map[string]*oauth.Provider{}
	h.gw.LegacyStarts = map[string]*oauth.Provider{}
	for name, pc := range h.app.Providers {
		p, err := h.app.buildProvider(name, pc, repl, h.PublicOrigin+"/api/auth/oauth/"+name+"/callback")
		if err != nil {
			return fmt.Errorf("credgate handler: provider %s: %w", name, err)
		}
		h.gw.Providers[name] = p
		if err := h.addLegacyRoute(h.legacyCallbacks, p, pc.LegacyCallback, h.LegacyCallback); err != nil {
			return err
		}
		if err := h.addLegacyRoute(h.gw.LegacyStarts, p, pc.LegacyStart, h.LegacyStart); err != nil {
			return err
		}
	}
	return nil
}

// addLegacyRoute puts p's legacy path (the provider's own override, else
// pattern with {platform} filled in; none when both are empty) into
// table. A path under credgate's own routes, or one another platform or
// route already has, is refused.
func (h *Handler) addLegacyRoute(table map[string]*oauth.Provider, p *oauth.Provider, override, pattern string) error {
	name := p.Name()
	path := override
	if path == "" {
		path = strings.ReplaceAll(pattern, "{platform}", name)
	}
	if path == "" {
		return nil
	}
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "/api/auth/oauth/") || strings.HasPrefix(path, "/api/credentials/") {
		return fmt.Errorf("credgate handler: legacy path %q for %s must be an absolute path outside credgate's own routes", path, name)
	}
	for _, routes := range []map[string]*oauth.Provider{h.legacyCallbacks, h.gw.LegacyStarts} {
		if other, dup := routes[path]; dup {
			return fmt.Errorf("credgate handler: legacy path %q is used by %s and %s", path, other.Name(), name)
		}
	}
	table[path] = p
	if !strings.HasPrefix(path, "/api/") {
		h.legacyOutsideAPI = true
	}
	return nil
}

// ServeHTTP routes credgate's paths and passes the rest on untouched.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// The cheap test first: pass-through traffic pays one prefix check.
	// Everything else lives in serveOwn, so that this frame stays small.
	if !strings.HasPrefix(r.URL.Path, "/api/") && !h.legacyOutsideAPI {
		return next.ServeHTTP(w, r)
	}
	return h.serveOwn(w, r, next)
}

// serveOwn serves the paths credgate may own: the legacy routes it
// watches and its own routes; any other /api/ path passes on.
func (h *Handler) serveOwn(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	path := r.URL.Path
	if p, ok := h.legacyCallbacks[path]; ok {
		return h.legacyCallback(w, r, next, p)
	}
	if p, ok := h.gw.LegacyStarts[path]; ok {
		return h.legacyStart(w, r, next, p)
	}
	if route := h.gw.Route(r.Method, path); route != nil {
		name, platform, flow := gateway.RouteSpan(path)
		if _, ok := h.gw.Providers[platform]; !ok {
			// Only a configured platform is a label: the path is the
			// client's to choose.
			platform = ""
		}
		return serveAnswering(h.ServerErrors, w, func(w http.ResponseWriter) {
			h.gw.Answers.Traced(w, r, name, telemetry.SpanAttrs(platform, flow), route)
		})
	}
	return next.ServeHTTP(w, r)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
