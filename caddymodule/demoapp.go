package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/credgate/credgate/sandbox/demoapp"
	"github.com/credgate/credgate/secret"
)

func init() {
	caddy.RegisterModule(DemoApp{})
	httpcaddyfile.RegisterHandlerDirective("credgate_demo_app", parseDemoAppDirective)
	httpcaddyfile.RegisterDirectiveOrder("credgate_demo_app", httpcaddyfile.Before, "respond")
}

// DemoApp serves the demo's stand-in for the existing app (package
// sandbox/demoapp): the app's own connect and callback routes for the
// legacy arm, the legacy connections it made, and a receiver for
// credgate's account webhooks. Every other request goes to the next
// handler (in the demo, file_server with the demo page). Its state lives
// in memory and starts empty with each config load. DEVELOPMENT ONLY:
// the demo binds it to loopback.
type DemoApp struct {
	// PublicOrigin is where the browser reaches the app through
	// credgate; the platforms call back on
	// PublicOrigin/api/<platform>/callback. Default http://localhost:8080.
	PublicOrigin string `json:"public_origin,omitempty"`
	// Sandbox is the provider sandbox's URL. Default http://localhost:9090.
	Sandbox string `json:"sandbox,omitempty"`
	// SessionCookie is the @supabase/ssr session cookie the page signs in
	// with. Default sb-localhost-auth-token.
	SessionCookie string `json:"session_cookie,omitempty"`
	// JWTSecret checks the session's access token (HS256). Required.
	JWTSecret string `json:"jwt_secret,omitempty"`
	// WebhookSecret checks the signature of credgate's webhook
	// deliveries (the credgate app's webhook secret). Required.
	WebhookSecret string `json:"webhook_secret,omitempty"`

	app *demoapp.App
}

// CaddyModule returns the Caddy module information.
func (DemoApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.credgate_demo_app", New: func() caddy.Module { return new(DemoApp) }}
}

// Provision builds the app: no network, no database.
func (d *DemoApp) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	app, err := demoapp.New(demoapp.Config{
		PublicOrigin:  defaultString(d.PublicOrigin, "http://localhost:8080"),
		SandboxURL:    defaultString(d.Sandbox, "http://localhost:9090"),
		SessionCookie: defaultString(d.SessionCookie, "sb-localhost-auth-token"),
		JWTSecret:     secret.New(repl.ReplaceKnown(d.JWTSecret, "")),
		WebhookSecret: secret.New(repl.ReplaceKnown(d.WebhookSecret, "")),
	})
	if err != nil {
		return err
	}
	d.app = app
	return nil
}

// ServeHTTP serves the app's routes and passes the rest on.
func (d *DemoApp) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !d.app.Serves(r) {
		return next.ServeHTTP(w, r)
	}
	d.app.ServeHTTP(w, r)
	return nil
}

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// UnmarshalCaddyfile parses:
//
//	credgate_demo_app {
//		public_origin  http://localhost:8080     # default
//		sandbox        http://localhost:9090     # default
//		session_cookie sb-localhost-auth-token   # default
//		jwt_secret     <the page's HS256 secret> # required
//		webhook_secret <credgate's webhook secret> # required
//	}
func (d *DemoApp) UnmarshalCaddyfile(disp *caddyfile.Dispenser) error {
	disp.Next()
	if disp.NextArg() {
		return disp.ArgErr()
	}
	for nesting := disp.Nesting(); disp.NextBlock(nesting); {
		var field *string
		switch disp.Val() {
		case "public_origin":
			field = &d.PublicOrigin
		case "sandbox":
			field = &d.Sandbox
		case "session_cookie":
			field = &d.SessionCookie
		case "jwt_secret":
			field = &d.JWTSecret
		case "webhook_secret":
			field = &d.WebhookSecret
		default:
			return disp.Errf("credgate_demo_app: unrecognized option %q", disp.Val())
		}
		if !disp.AllArgs(field) {
			return disp.ArgErr()
		}
	}
	return nil
}

func parseDemoAppDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := new(DemoApp)
	err := d.UnmarshalCaddyfile(h.Dispenser)
	return d, err
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*DemoApp)(nil)
	_ caddyhttp.MiddlewareHandler = (*DemoApp)(nil)
	_ caddyfile.Unmarshaler       = (*DemoApp)(nil)
)
