package caddymodule

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/credgate/credgate/sandbox"
)

func init() {
	caddy.RegisterModule(SandboxHandler{})
	httpcaddyfile.RegisterHandlerDirective("credgate_sandbox", parseSandboxDirective)
	httpcaddyfile.RegisterDirectiveOrder("credgate_sandbox", httpcaddyfile.Before, "reverse_proxy")
}

// SandboxHandler serves the provider emulator (package sandbox) from a
// Caddy site: every platform's real paths under the site's root, e.g.
// /twitter/2/oauth2/token. It answers every request; it never calls next.
// Its state (codes, tokens, counters) lives in memory and starts empty on
// every config load.
type SandboxHandler struct {
	// AutoApprove skips the consent page. Default false.
	AutoApprove bool `json:"auto_approve,omitempty"`
	// AppOrigin is the origin of the app whose callbacks the default
	// apps register. Default "http://localhost:8080".
	AppOrigin string `json:"app_origin,omitempty"`
	// Apps replace the default apps (one per platform, client id
	// "<platform>-client-id", secret "<platform>-client-secret").
	Apps []sandbox.App `json:"apps,omitempty"`
	// Faults by "<platform>.<endpoint>" (endpoints: authorize, token,
	// exchange, refresh, profile, revoke; "*" matches any).
	Faults map[string]sandbox.Fault `json:"faults,omitempty"`

	server *sandbox.Server
}

// CaddyModule returns the Caddy module information.
func (SandboxHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.credgate_sandbox",
		New: func() caddy.Module { return new(SandboxHandler) },
	}
}

// Provision builds the emulator and logs the client credentials it
// accepts (sandbox credentials, not secrets).
func (h *SandboxHandler) Provision(ctx caddy.Context) error {
	apps := h.Apps
	if len(apps) == 0 {
		apps = sandbox.DefaultApps(h.AppOrigin)
	}
	h.server = sandbox.New(sandbox.Config{Apps: apps, AutoApprove: h.AutoApprove, Faults: h.Faults})
	for _, a := range h.server.Apps() {
		ctx.Logger().Info("sandbox app", zap.String("platform", a.Platform), zap.String("client_id", a.ClientID),
			zap.String("client_secret", a.ClientSecret), zap.Strings("redirect_uris", a.RedirectURIs))
	}
	return nil
}

// ServeHTTP serves the emulator.
func (h *SandboxHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.server.ServeHTTP(w, r)
	return nil
}

// parseSandboxDirective parses:
//
//	credgate_sandbox {
//		auto_approve
//		app_origin http://localhost:8080
//		fault <platform>.<endpoint> {
//			error_rate 0.2
//			latency 300ms
//			invalid_grant
//			error_in_200
//			html_502
//		}
//	}
func parseSandboxDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(SandboxHandler)
	d := h.Dispenser
	d.Next()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "auto_approve":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			s.AutoApprove = true
		case "app_origin":
			if !d.AllArgs(&s.AppOrigin) {
				return nil, d.ArgErr()
			}
		case "fault":
			var key string
			if !d.AllArgs(&key) {
				return nil, d.ArgErr()
			}
			f, err := parseFault(d)
			if err != nil {
				return nil, err
			}
			if s.Faults == nil {
				s.Faults = map[string]sandbox.Fault{}
			}
			s.Faults[key] = f
		default:
			return nil, d.Errf("credgate_sandbox: unrecognized option %q", d.Val())
		}
	}
	return s, nil
}

func parseFault(d *caddyfile.Dispenser) (sandbox.Fault, error) {
	var f sandbox.Fault
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "error_rate":
			var v string
			if !d.AllArgs(&v) {
				return f, d.ArgErr()
			}
			rate, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
			if strings.HasSuffix(v, "%") {
				rate /= 100
			}
			if err != nil || rate < 0 || rate > 1 {
				return f, d.Errf("credgate_sandbox: error_rate must be between 0 and 1 (or 0%% and 100%%), got %q", v)
			}
			f.ErrorRate = rate
		case "latency":
			var v string
			if !d.AllArgs(&v) {
				return f, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < 0 {
				return f, d.Errf("credgate_sandbox: latency must be a duration such as 300ms, got %q", v)
			}
			f.Latency = sandbox.Duration(time.Duration(dur))
		case "invalid_grant", "error_in_200", "html_502":
			if d.NextArg() {
				return f, d.ArgErr()
			}
			switch opt {
			case "invalid_grant":
				f.InvalidGrant = true
			case "error_in_200":
				f.ErrorIn200 = true
			default:
				f.HTML502 = true
			}
		default:
			return f, d.Errf("credgate_sandbox: unrecognized fault option %q", opt)
		}
	}
	return f, nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*SandboxHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*SandboxHandler)(nil)
)
