// Package demoapp is the "existing app" of credgate's demo
// (examples/sandbox.Caddyfile): the social-media app credgate is put in
// front of, cut down to what makes both arms of a rollout visible.
//
// It exists because the legacy arm has to be seen, not only inferred. A
// stub written in Caddyfile directives could answer the app's callback
// but remember nothing, so a connection the rollout left with the app
// said "handled by the legacy app" once and then appeared nowhere. This
// stand-in does what the old app did, in memory: its connect route sends
// the browser to the platform (the provider sandbox) with a state of its
// own, and its callback exchanges the code and keeps the account it
// names (platform, account, when; never the token, which the real app
// would store in plaintext and credgate replaces). It also receives
// credgate's account webhooks, verifies their signatures
// (webhook.Verify) and keeps the events, so the demo page lists what
// the app heard.
//
// It knows the signed-in user as the real app would: from the
// @supabase/ssr session cookie the demo page writes, checked with the
// demo's JWT secret (package identity). Everything lives in memory and
// starts empty with each config load. DEVELOPMENT ONLY: it is a stand-in,
// bound to loopback in the demo, and it knows nothing of Caddy (the
// credgate_demo_app directive in package caddymodule serves it).
package demoapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/webhook"
)

// The app's routes besides the legacy OAuth ones
// (/api/<platform>/connect and /api/<platform>/callback).
const (
	// ConnectionsPath lists the signed-in user's legacy connections (GET)
	// and, under it, disconnects one (DELETE ConnectionsPath/<platform>).
	ConnectionsPath = "/api/app/connections"
	// EventsPath lists the webhook events received about the signed-in
	// user's accounts.
	EventsPath = "/api/app/events"
	// HookPath receives credgate's webhook deliveries.
	HookPath = "/hooks/credgate"
)

// maxEvents is how many received events the app keeps, all users
// together; the oldest go first.
const maxEvents = 500

// stateTTL is how long a flow the app started may take to come back.
const stateTTL = 10 * time.Minute

// Config is the stand-in app's setup.
type Config struct {
	// PublicOrigin is where the browser reaches the app, through
	// credgate: the platforms call back on PublicOrigin +
	// /api/<platform>/callback. Required.
	PublicOrigin string
	// SandboxURL is the provider sandbox the app's flows go to; its
	// clients are "<platform>-client-id" with secret
	// "<platform>-client-secret". Required.
	SandboxURL string
	// SessionCookie is the @supabase/ssr cookie that carries the
	// session (an Authorization: Bearer header is read too). Required.
	SessionCookie string
	// JWTSecret checks the session's access token (HS256). Required.
	JWTSecret secret.Value
	// WebhookSecret checks credgate's webhook signatures; at least
	// webhook.MinSecretLength bytes. Required.
	WebhookSecret secret.Value
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Transport carries the app's calls to the sandbox; default
	// oauth's shared one.
	Transport http.RoundTripper
}

// App is the stand-in app. It is safe for concurrent use.
type App struct {
	origin    string
	sessions  *identity.Reader
	providers map[string]*oauth.Provider
	hookKey   secret.Value
	now       func() time.Time

	mu          sync.Mutex
	flows       map[string]flow                  // the app's own states in flight
	connections map[string]map[string]Connection // by user, then platform
	events      []Event                          // oldest first
}

// Connection is an account the app connected itself (the legacy arm).
type Connection struct {
	Platform    string    `json:"platform"`
	AccountID   string    `json:"account_id"`
	Username    string    `json:"username"`
	ConnectedAt time.Time `json:"connected_at"`
}

// Event is a webhook event the app received and verified.
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	UserID    string          `json:"user_id"`
	Platform  string          `json:"platform"`
	AccountID string          `json:"account_id"`
	Data      json.RawMessage `json:"data,omitempty"`
	// ReceivedAt is the first delivery; Deliveries counts them all
	// (delivery is at least once: a repeat is acknowledged, not listed
	// twice).
	ReceivedAt time.Time `json:"received_at"`
	Deliveries int       `json:"deliveries"`
}

type flow struct {
	user, platform string
	verifier       secret.Value
	started        time.Time
}

// New returns the app for cfg.
func New(cfg Config) (*App, error) {
	switch {
	case cfg.PublicOrigin == "":
		return nil, errors.New("demo app: public_origin is required")
	case cfg.SandboxURL == "":
		return nil, errors.New("demo app: sandbox is required")
	case cfg.SessionCookie == "":
		return nil, errors.New("demo app: session_cookie is required")
	case cfg.JWTSecret.IsZero():
		return nil, errors.New("demo app: jwt_secret is required")
	case len(cfg.WebhookSecret.Reveal()) < webhook.MinSecretLength:
		return nil, fmt.Errorf("demo app: webhook_secret must be at least %d characters", webhook.MinSecretLength)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	verifier, err := identity.NewVerifier([]byte(cfg.JWTSecret.Reveal()), nil,
		identity.Policy{Audience: "authenticated", Role: "authenticated"})
	if err != nil {
		return nil, fmt.Errorf("demo app: %w", err)
	}
	origin := strings.TrimRight(cfg.PublicOrigin, "/")
	a := &App{
		origin:    origin,
		sessions:  &identity.Reader{Cookies: []string{cfg.SessionCookie}, Header: true, Verifier: verifier},
		providers: map[string]*oauth.Provider{},
		hookKey:   cfg.WebhookSecret,
		now:       cfg.Now,
		flows:     map[string]flow{}, connections: map[string]map[string]Connection{},
	}
	for _, platform := range oauth.Platforms {
		authURL, tokenURL, apiBase, err := oauth.SandboxURLs(platform, cfg.SandboxURL)
		if err != nil {
			return nil, err
		}
		p, err := oauth.New(platform, oauth.Config{
			ClientID: platform + "-client-id", ClientSecret: secret.New(platform + "-client-secret"),
			RedirectURL: origin + "/api/" + platform + "/callback",
			AuthURL:     authURL, TokenURL: tokenURL, APIBase: apiBase, Transport: cfg.Transport, Now: cfg.Now,
		})
		if err != nil {
			return nil, fmt.Errorf("demo app: %w", err)
		}
		a.providers[platform] = p
	}
	return a, nil
}

// Serves reports whether the request is for one of the app's routes;
// anything else is left to the next handler (the demo's page and files).
func (a *App) Serves(r *http.Request) bool {
	_, _, ok := a.route(r.URL.Path)
	return ok
}

// route names the route a path belongs to and its platform, if any.
func (a *App) route(path string) (name, platform string, ok bool) {
	switch path {
	case ConnectionsPath, EventsPath, HookPath:
		return path, "", true
	}
	if p, ok := strings.CutPrefix(path, ConnectionsPath+"/"); ok && a.providers[p] != nil {
		return ConnectionsPath + "/", p, true
	}
	rest, ok := strings.CutPrefix(path, "/api/")
	if !ok {
		return "", "", false
	}
	p, action, _ := strings.Cut(rest, "/")
	if a.providers[p] == nil || (action != "connect" && action != "callback") {
		return "", "", false
	}
	return action, p, true
}

// ServeHTTP serves the app's routes (404 for any other path).
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, platform, ok := a.route(r.URL.Path)
	allow := map[string]string{"connect": http.MethodGet, "callback": http.MethodGet, ConnectionsPath: http.MethodGet,
		ConnectionsPath + "/": http.MethodDelete, EventsPath: http.MethodGet, HookPath: http.MethodPost}[name]
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, "not_found", "no such route")
		return
	case r.Method != allow:
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+allow)
		return
	}
	switch name {
	case "connect":
		a.connect(w, r, platform)
	case "callback":
		a.callback(w, r, platform)
	case ConnectionsPath:
		a.listConnections(w, r)
	case ConnectionsPath + "/":
		a.disconnect(w, r, platform)
	case EventsPath:
		a.listEvents(w, r)
	case HookPath:
		a.receive(w, r)
	}
}

// user is the signed-in user's id, or "".
func (a *App) user(r *http.Request) string {
	return a.sessions.Read(r.Context(), r, identity.NoRefresh).UserID
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers as credgate does: {"error":{"code","message"}}.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]map[string]string{"error": {"code": code, "message": message}})
}
