package caddymodule

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/credgate/credgate/backend"
	"github.com/credgate/credgate/egress"
)

func init() {
	caddy.RegisterModule(Egress{})
	httpcaddyfile.RegisterHandlerDirective("credgate_egress", parseEgress)
	httpcaddyfile.RegisterDirectiveOrder("credgate_egress", httpcaddyfile.Before, "respond")
}

// Egress is the credgate_egress handler: the app's back end sends its
// platform API calls here instead of to the platform, and credgate adds
// the user's current access token, so the app never holds one.
//
//	POST /{platform}/{the platform's API path}?{query}
//	Authorization: Bearer <service_token>
//	X-Credgate-User: <user uuid>
//	X-Credgate-Retry: safe   (optional: the call may be sent twice)
//
// goes to the platform's API base (api.x.com, api.linkedin.com,
// graph.facebook.com, graph.instagram.com, or the sandbox's) with the
// user's token as `Authorization: Bearer`. Only that base is ever
// reached: the host never comes from the request. Put it on an internal
// listener, never the public origin.
type Egress struct {
	internalHandler

	// MaxRetryBody is the largest request body read whole before the
	// platform is called, and kept so that a call the platform refused
	// with an expired-token answer can be sent again after a renewal (an
	// idempotent call, or one marked "X-Credgate-Retry: safe"). Larger
	// bodies, and bodies of unknown length, are streamed and not resent.
	// Default 1 MiB.
	MaxRetryBody int64 `json:"max_retry_body,omitempty"`

	// BodyTimeout bounds the time a call's request body may take to
	// arrive, counted from when egress takes the call; a body still
	// incomplete then is answered 408 request_timeout and its connection
	// closed. Default 10s.
	BodyTimeout caddy.Duration `json:"body_timeout,omitempty"`

	// MaxInFlight is how many calls this handler serves at once for its
	// service token, on each instance, from the first byte of the body to
	// the last byte of the platform's answer; more are answered 429
	// too_many_requests with Retry-After. Default 64.
	MaxInFlight int `json:"max_in_flight,omitempty"`

	// DialTimeout bounds connecting to a platform's API (TCP and TLS
	// each); a platform not reached in time is answered 502
	// provider_unavailable. Default 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// ResponseHeaderTimeout bounds the wait for the platform's answer
	// once the whole call is sent; past it the call is answered 502
	// provider_unavailable and its slot freed (MaxInFlight). The body of
	// the answer then streams without a bound. Default 30s.
	ResponseHeaderTimeout caddy.Duration `json:"response_header_timeout,omitempty"`

	proxy *backend.Egress
}

// CaddyModule returns the Caddy module information.
func (Egress) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.credgate_egress", New: func() caddy.Module { return new(Egress) }}
}

// Provision binds the handler to the credgate app.
func (e *Egress) Provision(ctx caddy.Context) error {
	if err := e.provision(ctx, "credgate_egress"); err != nil {
		return err
	}
	if e.MaxRetryBody <= 0 {
		e.MaxRetryBody = 1 << 20
	}
	if e.BodyTimeout <= 0 {
		e.BodyTimeout = caddy.Duration(10 * time.Second)
	}
	if e.MaxInFlight <= 0 {
		e.MaxInFlight = 64
	}
	if e.DialTimeout <= 0 {
		e.DialTimeout = caddy.Duration(5 * time.Second)
	}
	if e.ResponseHeaderTimeout <= 0 {
		e.ResponseHeaderTimeout = caddy.Duration(30 * time.Second)
	}
	// The only hosts egress ever reaches: each configured platform's API
	// base, parsed once.
	bases := map[string]*url.URL{}
	for name, p := range e.app.refresher.Providers {
		if base, err := url.Parse(p.APIBase()); err == nil && base.Host != "" && (base.Scheme == "https" || base.Scheme == "http") {
			bases[name] = base
		}
	}
	e.proxy = &backend.Egress{Service: e.service, MaxRetryBody: e.MaxRetryBody, BodyTimeout: time.Duration(e.BodyTimeout),
		MaxInFlight: e.MaxInFlight, Bases: bases,
		// A platform that does not accept or does not answer must not
		// hold a call, and its MaxInFlight place, for as long as the
		// caller waits.
		Transport: egress.NewTransport(time.Duration(e.DialTimeout), time.Duration(e.ResponseHeaderTimeout))}
	return nil
}

// ServeHTTP forwards one API call (backend.Egress).
func (e *Egress) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	return serveAnswering(e.ServerErrors, w, func(w http.ResponseWriter) { e.proxy.ServeHTTP(w, r) })
}

// Cleanup closes the pooled connections.
func (e *Egress) Cleanup() error {
	if e.proxy == nil {
		return nil
	}
	if t, ok := e.proxy.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	return nil
}

// parseEgress parses:
//
//	credgate_egress {
//		service_token  <token>     # required, e.g. {env.CREDGATE_SERVICE_TOKEN}
//		min_validity   <duration>  # default 5m
//		max_retry_body <bytes>     # default 1048576
//		body_timeout   <duration>  # default 10s
//		max_in_flight  <calls>     # default 64
//		dial_timeout   <duration>  # default 5s
//		response_header_timeout <duration>  # default 30s
//		server_errors  json|caddy  # who answers its 5xx; default json (server_errors.go)
//	}
func parseEgress(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	e := new(Egress)
	if err := e.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return e, nil
}

// UnmarshalCaddyfile reads the credgate_egress block (parseEgress), for a
// site and for caddyfile.UnmarshalModule alike.
func (e *Egress) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseInternalHandler(d, "credgate_egress", &e.internalHandler, func(d *caddyfile.Dispenser, opt string) (bool, error) {
		switch opt {
		case "max_retry_body":
			n, err := parseCountArg(d, opt, "a whole number of bytes")
			e.MaxRetryBody = n
			return true, err
		case "max_in_flight":
			n, err := parseCountArg(d, opt, "a whole number of calls")
			e.MaxInFlight = int(min(n, 1<<20))
			return true, err
		case "body_timeout":
			dur, err := parseDurationArg(d, opt)
			e.BodyTimeout = caddy.Duration(dur)
			return true, err
		case "dial_timeout":
			dur, err := parseDurationArg(d, opt)
			e.DialTimeout = caddy.Duration(dur)
			return true, err
		case "response_header_timeout":
			dur, err := parseDurationArg(d, opt)
			e.ResponseHeaderTimeout = caddy.Duration(dur)
			return true, err
		}
		return false, nil
	})
}

// parseCountArg reads one positive whole-number argument of option opt,
// a number of what.
func parseCountArg(d *caddyfile.Dispenser, opt, what string) (int64, error) {
	var raw string
	if !d.AllArgs(&raw) {
		return 0, d.ArgErr()
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 1 {
		return 0, d.Errf("credgate_egress: %s must be %s, got %q", opt, what, raw)
	}
	return n, nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Egress)(nil)
	_ caddy.CleanerUpper          = (*Egress)(nil)
	_ caddyhttp.MiddlewareHandler = (*Egress)(nil)
	_ caddyfile.Unmarshaler       = (*Egress)(nil)
)
