package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/credgate/credgate/backend"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
)

func init() {
	caddy.RegisterModule(TokenAPI{})
	httpcaddyfile.RegisterHandlerDirective("credgate_tokens", parseTokenAPI)
	// Before respond, so a catch-all "respond 404" in the internal site
	// does not shadow it.
	httpcaddyfile.RegisterDirectiveOrder("credgate_tokens", httpcaddyfile.Before, "respond")
}

// TokenAPI is the credgate_tokens handler: the app's back end fetches a
// user's current access token from it instead of reading
// social_accounts.access_token, which accounts connected through the new
// flow no longer have.
//
//	GET /api/internal/credentials/{user_id}/{platform}/token
//	Authorization: Bearer <service_token>
//
// Put it in a site on an internal listener (127.0.0.1:8081 in the
// example), never on the public origin.
type TokenAPI struct {
	internalHandler

	// ServeLegacyPlaintext returns the legacy plaintext access_token of
	// an account that backfill has not sealed yet. Default false: such an
	// account is not_connected here until `caddy credgate backfill` runs.
	ServeLegacyPlaintext bool `json:"serve_legacy_plaintext,omitempty"`

	api *backend.TokenAPI
}

// internalHandler is what the handlers of the internal listener
// (credgate_tokens, credgate_egress) share: the app's back end
// authenticates with a service token, and a token that expires within
// MinValidity is renewed before it is used.
type internalHandler struct {
	// ServiceToken is the bearer token the app's back end sends, normally
	// "{env.CREDGATE_SERVICE_TOKEN}". Required, at least 16 characters;
	// there is no default.
	ServiceToken string `json:"service_token,omitempty"`

	// MinValidity: a token that expires sooner is renewed first. Default
	// 5m.
	MinValidity caddy.Duration `json:"min_validity,omitempty"`

	// ServerErrors says who answers the handler's own 5xx: "json" (the
	// default) or "caddy", for the site's handle_errors (server_errors.go).
	ServerErrors string `json:"server_errors,omitempty"`

	app     *App
	logger  *zap.Logger
	service *backend.Service
}

// provision binds the handler named who to the credgate app. No network.
func (ih *internalHandler) provision(ctx caddy.Context, who string) error {
	ih.logger = ctx.Logger()
	app, err := credgateApp(ctx, who)
	if err != nil {
		return err
	}
	ih.app = app
	if err := checkServerErrors(who, ih.ServerErrors); err != nil {
		return err
	}
	token := secret.New(caddy.NewReplacer().ReplaceKnown(ih.ServiceToken, ""))
	if len(token.Reveal()) < 16 {
		return fmt.Errorf("%s: service_token is required and must be at least 16 characters (for example {env.CREDGATE_SERVICE_TOKEN})", who)
	}
	app.run.exposure.NoteSecret(who, "service_token", token.Reveal(), 0)
	app.warnLiteral(who, "service_token", ih.ServiceToken)
	if ih.MinValidity <= 0 {
		ih.MinValidity = caddy.Duration(5 * time.Minute)
	}
	ih.warnUnreachableValidity(who)
	ih.service = &backend.Service{Token: token, MinValidity: time.Duration(ih.MinValidity), Refresher: app.refresher,
		Metrics: app.metrics, ReadAudit: app.readAudit, BackendReads: app.backendReads, Available: app.Available,
		Answers: app.answers(), Logger: ih.logger}
	return nil
}

// warnUnreachableValidity says which platforms' tokens cannot stay valid
// for MinValidity: a read renews a token only in the second half of its
// life (worker.Policy.NeedsRenewal), so there the token served may have
// as little as half its lifetime left. Renewing earlier would renew at
// every read, each new token no better than the last.
func (ih *internalHandler) warnUnreachableValidity(who string) {
	for name, p := range ih.app.refresher.Providers {
		profile, err := oauth.Lookup(p.Name(), oauth.GenericSettings{})
		lifetime := profile.DefaultLifetime
		if err != nil || lifetime <= 0 || p.Renewal() == oauth.RenewNever || time.Duration(ih.MinValidity) <= lifetime/2 {
			continue
		}
		ih.logger.Warn(fmt.Sprintf("%s: min_validity %s is more than half the life of %s's access tokens (%s): such a token is renewed on a read only once half its life has passed, and may be served with as little as %s left",
			who, shortDuration(time.Duration(ih.MinValidity)), name, shortDuration(lifetime), shortDuration(lifetime/2)),
			zap.String("platform", name), zap.Duration("token_lifetime", lifetime), zap.Duration("min_validity", time.Duration(ih.MinValidity)))
	}
}

// shortDuration writes d as people do: 2h, 1h30m, not 2h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// CaddyModule returns the Caddy module information.
func (TokenAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.credgate_tokens",
		New: func() caddy.Module { return new(TokenAPI) },
	}
}

// Provision binds the handler to the credgate app. No network.
func (t *TokenAPI) Provision(ctx caddy.Context) error {
	if err := t.provision(ctx, "credgate_tokens"); err != nil {
		return err
	}
	t.api = &backend.TokenAPI{Service: t.service, ServeLegacyPlaintext: t.ServeLegacyPlaintext}
	return nil
}

// ServeHTTP serves the token route and passes everything else on.
func (t *TokenAPI) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !strings.HasPrefix(r.URL.Path, backend.TokenRoutePrefix) {
		return next.ServeHTTP(w, r)
	}
	return serveAnswering(t.ServerErrors, w, func(w http.ResponseWriter) { t.api.ServeHTTP(w, r) })
}

// parseTokenAPI parses:
//
//	credgate_tokens {
//		service_token <token>      # required, e.g. {env.CREDGATE_SERVICE_TOKEN}
//		min_validity  <duration>   # default 5m
//		serve_legacy_plaintext     # default off
//		server_errors json|caddy   # who answers its 5xx; default json (server_errors.go)
//	}
func parseTokenAPI(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	t := new(TokenAPI)
	if err := t.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return t, nil
}

// UnmarshalCaddyfile reads the credgate_tokens block (parseTokenAPI), for
// a site and for caddyfile.UnmarshalModule alike.
func (t *TokenAPI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseInternalHandler(d, "credgate_tokens", &t.internalHandler, func(d *caddyfile.Dispenser, opt string) (bool, error) {
		if opt != "serve_legacy_plaintext" {
			return false, nil
		}
		if d.NextArg() {
			return true, d.ArgErr()
		}
		t.ServeLegacyPlaintext = true
		return true, nil
	})
}

// parseInternalHandler parses the block of an internal handler
// (credgate_tokens, credgate_egress): the options they share,
// service_token and min_validity, and any other through more, which
// reports whether it knew the option.
func parseInternalHandler(d *caddyfile.Dispenser, who string, ih *internalHandler,
	more func(d *caddyfile.Dispenser, opt string) (bool, error)) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "service_token":
			if !d.AllArgs(&ih.ServiceToken) {
				return d.ArgErr()
			}
		case "server_errors":
			if !d.AllArgs(&ih.ServerErrors) {
				return d.ArgErr()
			}
		case "min_validity":
			dur, err := parseDurationArg(d, opt)
			if err != nil {
				return err
			}
			ih.MinValidity = caddy.Duration(dur)
		default:
			known, err := more(d, opt)
			if err != nil {
				return err
			}
			if !known {
				return d.Errf("%s: unrecognized option %q", who, opt)
			}
		}
	}
	return nil
}

// parseDurationArg reads one positive duration argument of option opt.
func parseDurationArg(d *caddyfile.Dispenser, opt string) (time.Duration, error) {
	var raw string
	if !d.AllArgs(&raw) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(raw)
	if err != nil || dur <= 0 {
		return 0, d.Errf("credgate: %s must be a positive duration such as 10m, got %q", opt, raw)
	}
	return dur, nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*TokenAPI)(nil)
	_ caddyhttp.MiddlewareHandler = (*TokenAPI)(nil)
	_ caddyfile.Unmarshaler       = (*TokenAPI)(nil)
)
