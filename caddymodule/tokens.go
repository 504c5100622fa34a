package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

func init() {
	caddy.RegisterModule(TokenAPI{})
	httpcaddyfile.RegisterHandlerDirective("credgate_tokens", parseTokenAPI)
	// Before respond, so a catch-all "respond 404" in the internal site
	// does not shadow it.
	httpcaddyfile.RegisterDirectiveOrder("credgate_tokens", httpcaddyfile.Before, "respond")
}

// tokenRoutePrefix is where the token API lives. The public credgate
// handler answers 404 under it, so a token is never served on the app's
// public origin even if the app or a proxy rule would route it.
const tokenRoutePrefix = "/api/internal/credentials/"

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

	app    *App
	token  secret.Value
	logger *zap.Logger
}

// provision binds the handler named who to the credgate app. No network.
func (ih *internalHandler) provision(ctx caddy.Context, who string) error {
	ih.logger = ctx.Logger()
	app, err := credgateApp(ctx, who)
	if err != nil {
		return err
	}
	ih.app = app
	ih.token = secret.New(caddy.NewReplacer().ReplaceKnown(ih.ServiceToken, ""))
	if len(ih.token.Reveal()) < 16 {
		return fmt.Errorf("%s: service_token is required and must be at least 16 characters (for example {env.CREDGATE_SERVICE_TOKEN})", who)
	}
	app.noteSecret(who, "service_token", ih.token.Reveal(), 0)
	app.warnLiteral(who, "service_token", ih.ServiceToken)
	if ih.MinValidity <= 0 {
		ih.MinValidity = caddy.Duration(5 * time.Minute)
	}
	ih.warnUnreachableValidity(who)
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

// authorized answers 401 unless the request carries the service token.
// It comes first: without the token nothing about routes, users or
// platforms is revealed.
func (ih *internalHandler) authorized(w http.ResponseWriter, r *http.Request) bool {
	if bearerMatches(r, ih.token) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="credgate"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", "the service token is missing or wrong")
	return false
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
	return t.provision(ctx, "credgate_tokens")
}

// tokenView is the token API's answer.
type tokenView struct {
	AccessToken    string     `json:"access_token"`
	TokenType      string     `json:"token_type"`
	ExpiresAt      *time.Time `json:"expires_at"`
	PlatformUserID string     `json:"platform_user_id"`
	Scopes         []string   `json:"scopes"`
}

// appendJSON appends the answer as encoding/json writes it (the tests
// compare the two): the token API's hottest path, where the encoder's
// reflection cost a fifth of the handler's CPU. An expiry that RFC 3339
// cannot write in its own zone (a year past 9999 there) is written in
// UTC; one it cannot write in UTC either is an error, never a null,
// which would say the token does not expire.
func (v tokenView) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, v.AccessToken)
	b = append(b, `,"token_type":`...)
	b = appendJSONString(b, v.TokenType)
	b = append(b, `,"expires_at":`...)
	if v.ExpiresAt == nil {
		b = append(b, "null"...)
	} else {
		t, err := v.ExpiresAt.MarshalJSON()
		if err != nil {
			if t, err = v.ExpiresAt.UTC().MarshalJSON(); err != nil {
				return nil, fmt.Errorf("writing the token's expiry: %w", err)
			}
		}
		b = append(b, t...)
	}
	b = append(b, `,"platform_user_id":`...)
	b = appendJSONString(b, v.PlatformUserID)
	b = append(b, `,"scopes":`...)
	if v.Scopes == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, s := range v.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		b = append(b, ']')
	}
	return append(b, "}\n"...), nil
}

// appendJSONString appends s as a JSON string. Printable ASCII that
// encoding/json leaves alone (tokens, ids and scopes are) is copied;
// anything else is left to encoding/json, so the escaping is its own.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ServeHTTP serves the token route and passes everything else on.
func (t *TokenAPI) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	rest, ok := strings.CutPrefix(r.URL.Path, tokenRoutePrefix)
	if !ok {
		return next.ServeHTTP(w, r)
	}
	answer := t.app.early(w, telemetry.RouteToken)
	defer answer.done()
	w = answer.Writer()
	if !t.authorized(w, r) {
		return nil
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] != "token" {
		writeError(w, http.StatusNotFound, "not_found", "the token route is "+tokenRoutePrefix+"{user_id}/{platform}/token")
		return nil
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
		return nil
	}
	platform := parts[1]
	id, err := uuid.Parse(parts[0])
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_user", "user_id must be a UUID")
		return nil
	}
	// The canonical form: uuid.Parse also takes urn:uuid:… and braces,
	// which PostgreSQL does not.
	user := id.String()
	if _, ok := t.app.refresher.Providers[platform]; !ok {
		writeError(w, http.StatusNotFound, "unknown_platform", "no such platform is configured")
		return nil
	}
	if !t.app.Available() {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "credential storage is temporarily unavailable")
		return nil
	}
	t.app.backendReads.Count(platform, vault.ViaTokenAPI)
	answer.traced(r, "credgate.token.read", telemetry.SpanAttrs(platform, ""), func(w http.ResponseWriter, r *http.Request) {
		t.serveToken(w, r, user, platform)
	})
	return nil
}

func (t *TokenAPI) serveToken(w http.ResponseWriter, r *http.Request, user, platform string) {
	// Reads of one user in a burst go to the database once
	// (worker.RecentFor), as egress's do.
	tok, err := t.app.refresher.ReadForBackEnd(r.Context(), user, platform, time.Duration(t.MinValidity), t.ServeLegacyPlaintext)
	source := tok.Source
	// Counted, not written: the app's audit row for this read comes with
	// the window's others (App.AuditReadWindow).
	audit := func(status vault.Outcome, code string) {
		t.app.readAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaTokenAPI,
			Status: status, ErrorCode: code, Source: source, Refreshed: tok.Refreshed, RenewalFailed: tok.RenewalFailed})
		outcome := code
		if status == vault.Success {
			outcome = telemetry.Success
		}
		t.app.metrics.TokenRead(platform, outcome)
	}
	if err != nil {
		status, code, message := tokenFailure(err)
		if status == 0 {
			// The store failed part way: still a read, counted.
			audit(vault.Failed, storeErrorCode(r, err))
			writeStoreError(t.logger, w, r, "reading a token", err)
			return
		}
		switch code {
		case "decrypt_failed":
			t.logger.Error("token API: credentials do not decrypt", zap.String("platform", platform), errField(err))
		case "provider_unavailable":
			w.Header().Set("Retry-After", "30")
		case "renewal_pending":
			w.Header().Set("Retry-After", "5")
		}
		// A renewal the platform refused is audited by the platform's code
		// (invalid_grant, rate_limited …), not the answer's.
		if isPlatformError(err) {
			audit(vault.Failed, string(oauth.CodeOf(err)))
		} else {
			audit(vault.Failed, code)
		}
		writeError(w, status, code, message)
		return
	}
	view := tokenView{AccessToken: tok.Credentials.AccessToken.Reveal(), TokenType: tok.Credentials.TokenType,
		ExpiresAt: tok.Account.ExpiresAt, PlatformUserID: tok.Account.PlatformUserID, Scopes: tok.Account.Scopes}
	if view.TokenType == "" {
		view.TokenType = "bearer"
	}
	if view.Scopes == nil {
		view.Scopes = []string{}
	}
	body, err := view.appendJSON(make([]byte, 0, 256))
	if err != nil {
		audit(vault.Failed, "internal")
		writeStoreError(t.logger, w, r, "answering a token read", err)
		return
	}
	audit(vault.Success, "")
	writeJSONBody(w, http.StatusOK, body)
}

// parseTokenAPI parses:
//
//	credgate_tokens {
//		service_token <token>      # required, e.g. {env.CREDGATE_SERVICE_TOKEN}
//		min_validity  <duration>   # default 5m
//		serve_legacy_plaintext     # default off
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
	return parseInternalHandler(d, "credgate_tokens", &t.ServiceToken, &t.MinValidity, func(d *caddyfile.Dispenser, opt string) (bool, error) {
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
func parseInternalHandler(d *caddyfile.Dispenser, who string, token *string, minValidity *caddy.Duration,
	more func(d *caddyfile.Dispenser, opt string) (bool, error)) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "service_token":
			if !d.AllArgs(token) {
				return d.ArgErr()
			}
		case "min_validity":
			dur, err := parseDurationArg(d, opt)
			if err != nil {
				return err
			}
			*minValidity = caddy.Duration(dur)
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
