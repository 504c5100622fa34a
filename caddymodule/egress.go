package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/credgate/credgate/egress"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
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

	transport http.RoundTripper
	bases     map[string]*url.URL
	// inFlight counts the calls being served (MaxInFlight).
	inFlight *atomic.Int64
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
	e.inFlight = new(atomic.Int64)
	// The only hosts egress ever reaches: each configured platform's API
	// base, parsed once.
	e.bases = map[string]*url.URL{}
	for name, p := range e.app.refresher.Providers {
		if base, err := url.Parse(p.APIBase()); err == nil && base.Host != "" && (base.Scheme == "https" || base.Scheme == "http") {
			e.bases[name] = base
		}
	}
	// A platform that does not accept or does not answer must not hold a
	// call, and its MaxInFlight place, for as long as the caller waits.
	e.transport = egress.NewTransport(time.Duration(e.DialTimeout), time.Duration(e.ResponseHeaderTimeout))
	return nil
}

// Cleanup closes the pooled connections.
func (e *Egress) Cleanup() error {
	if t, ok := e.transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	return nil
}

// ServeHTTP forwards one API call.
func (e *Egress) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	answer := e.app.early(w, telemetry.RouteEgress)
	defer answer.done()
	w = answer.Writer()
	// From here every answer, even a refusal, waits for the body at most
	// BodyTimeout: net/http reads what the handler left before it
	// answers on a kept-alive connection.
	// (Caddy wraps even an empty body: the length says whether there is
	// one, -1 for chunked.)
	hasBody := r.ContentLength != 0
	if hasBody {
		r.Body = egress.BoundBody(w, r.Body, time.Duration(e.BodyTimeout))
	}
	if !e.authorized(w, r) {
		return nil
	}
	platform, apiPath, rawPath, err := egress.Target(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_path", err.Error())
		return nil
	}
	base, ok := e.bases[platform]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown_platform", "no such platform is configured, or it has no API base")
		return nil
	}
	id, err := uuid.Parse(r.Header.Get("X-Credgate-User"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_user", "X-Credgate-User must be the user's UUID")
		return nil
	}
	user := id.String()
	resend, err := egress.MayResend(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_retry", err.Error())
		return nil
	}
	if !e.admit() {
		e.app.metrics.Egress(platform, "too_many_requests")
		if hasBody {
			// Answer now rather than after reading the body to keep the
			// connection.
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "too_many_requests", "more calls with this service token are in flight than max_in_flight allows; try again shortly")
		return nil
	}
	defer e.inFlight.Add(-1)
	if !e.app.Available() {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "credential storage is temporarily unavailable")
		return nil
	}
	e.app.backendReads.Count(platform, vault.ViaEgress)
	answer.traced(r, "credgate.egress", telemetry.SpanAttrs(platform, ""), func(w http.ResponseWriter, r *http.Request) {
		e.forward(w, r, user, platform, base, apiPath, rawPath, resend)
	})
	return nil
}

// admit takes one of MaxInFlight places for a call, reporting whether
// one was free; the caller gives it back when the call is over.
func (e *Egress) admit() bool {
	if e.inFlight.Add(1) > int64(e.MaxInFlight) {
		e.inFlight.Add(-1)
		return false
	}
	return true
}

// forward calls the platform with the user's token, renewed first when it
// expires within MinValidity. If the platform refuses the token as expired
// or revoked, the token is renewed, and the call sent once more when
// resend allows it.
func (e *Egress) forward(w http.ResponseWriter, r *http.Request, user, platform string, base *url.URL, apiPath, rawPath string, resend bool) {
	ctx, cancel := context.WithTimeout(r.Context(), worker.BackEndReadBudget)
	defer cancel()
	// A body of known length up to MaxRetryBody is read whole before
	// anything else (within BodyTimeout), so that the platform never gets
	// half a call and the call can be sent again. A larger or chunked
	// body streams through and is not resent.
	var body []byte
	if r.ContentLength > 0 && r.ContentLength <= e.MaxRetryBody {
		var err error
		if body, err = io.ReadAll(io.LimitReader(r.Body, e.MaxRetryBody+1)); err != nil {
			e.bodyFailed(w, r, platform)
			return
		}
	}
	// A burst of calls for one user reads the database once
	// (worker.RecentFor).
	tok, err := e.app.refresher.ReadRecent(ctx, user, platform, time.Duration(e.MinValidity), "egress")
	token := tok.Credentials.AccessToken
	if err != nil {
		e.fail(w, r, user, platform, err)
		return
	}
	// A call the platform refused for its token is sent again only when
	// sending it twice does no harm (resend), and only if its body can
	// be: a call without one always, one with a body kept in memory.
	retryable := resend && (body != nil || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0)
	rt := &egress.RenewingTransport{Next: e.transport, Platform: platform, Token: token, Body: body, Retryable: retryable,
		// The renewal is audited by the refresher (trigger egress), as
		// are its failures.
		Renew: func(rejected secret.Value) (secret.Value, error) {
			e.app.refresher.Forget(user, platform)
			renewed, err := e.app.refresher.RenewRejected(ctx, user, platform, rejected, "egress")
			if err != nil {
				return secret.Value{}, err
			}
			if renewed.Credentials.AccessToken.Reveal() == rejected.Reveal() {
				return secret.Value{}, worker.ErrRefusedFresh
			}
			return renewed.Credentials.AccessToken, nil
		}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = egress.URL(base, apiPath, rawPath, r.URL.RawQuery)
			pr.Out.Host = base.Host
			egress.DropCallerHeaders(pr.Out.Header)
			if body != nil {
				pr.Out.Body = io.NopCloser(bytes.NewReader(body))
				pr.Out.ContentLength = int64(len(body))
			}
		},
		Transport:  rt,
		BufferPool: copyBuffers,
		// Each call is counted once into the token_read audit rows (via
		// egress): here when the platform answered, in fail when no
		// token could be had.
		ModifyResponse: func(resp *http.Response) error {
			e.app.metrics.Egress(platform, strconv.Itoa(resp.StatusCode/100)+"xx")
			e.app.readAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaEgress, Status: vault.Success})
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if err := rt.RenewErr(); err != nil {
				e.fail(w, r, user, platform, err)
				return
			}
			if egress.BodyTimedOut(r) {
				e.bodyFailed(w, r, platform)
				return
			}
			e.app.metrics.Egress(platform, "provider_unavailable")
			e.app.readAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaEgress, Status: vault.Failed,
				ErrorCode: "provider_unavailable"})
			e.logger.Info("egress call failed", zap.String("platform", platform), errField(err))
			writeError(w, http.StatusBadGateway, "provider_unavailable", "the platform did not answer")
		},
	}
	proxy.ServeHTTP(w, r)
}

// copyBuffers are the response copy buffers, reused across calls as
// reverse_proxy does (httputil.ReverseProxy allocates 32 KiB per call
// otherwise).
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }

// fail answers a token that cannot be had. Like every token use through
// egress, it is counted into the window's token_read audit rows (via
// egress, the answer's code); renewals and their failures also have the
// refresher's own rows.
func (e *Egress) fail(w http.ResponseWriter, r *http.Request, user, platform string, err error) {
	status, code, message := tokenFailure(err)
	if status == 0 {
		code = storeErrorCode(r, err)
	}
	e.app.metrics.Egress(platform, code)
	e.app.readAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaEgress, Status: vault.Failed, ErrorCode: code})
	if status == 0 {
		writeStoreError(e.logger, w, r, "egress: reading a token", err)
		return
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "30")
	}
	writeError(w, status, code, message)
}

// bodyFailed answers a call whose body could not be read: 408 when it
// did not arrive within BodyTimeout, else 400.
func (e *Egress) bodyFailed(w http.ResponseWriter, r *http.Request, platform string) {
	if !egress.BodyTimedOut(r) {
		writeError(w, http.StatusBadRequest, "invalid_body", "the request body could not be read")
		return
	}
	e.app.metrics.Egress(platform, "request_timeout")
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestTimeout, "request_timeout", "the request body did not arrive within body_timeout")
}

// tokenFailureCodes are the codes tokenFailure answers with.
var tokenFailureCodes = []string{"not_connected", "needs_reauth", "decrypt_failed", "provider_unavailable",
	"token_expired", "expiry_unknown", "renewal_pending"}

// tokenReadOutcomes are the token API's outcomes (the outcome label of
// credgate_token_reads_total): success, a code of tokenFailure's, or the
// platform's code for a renewal it refused.
func tokenReadOutcomes() []string {
	out := append([]string{telemetry.Success}, tokenFailureCodes...)
	for _, c := range oauth.Codes() {
		if !slices.Contains(out, string(c)) {
			out = append(out, string(c))
		}
	}
	return out
}

// egressClasses are the status_class label's values of
// credgate_egress_requests_total: the platform's answer's class, or the
// code credgate answered with.
func egressClasses() []string {
	out := []string{"2xx", "3xx", "4xx", "5xx", "too_many_requests", "request_timeout"}
	for _, c := range tokenFailureCodes {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// tokenFailure maps a failure to get a token to the answer both the token
// API and the egress proxy give; status 0 for a storage failure.
func tokenFailure(err error) (status int, code, message string) {
	switch {
	case errors.Is(err, vault.ErrNotConnected):
		return http.StatusNotFound, "not_connected", "this user has no connected account on this platform"
	case errors.Is(err, worker.ErrNeedsReauth):
		return http.StatusConflict, "needs_reauth", "the user must reconnect this platform"
	case vault.Undecryptable(err):
		return http.StatusInternalServerError, "decrypt_failed", "the stored credentials cannot be decrypted with the configured keys"
	case isPlatformError(err):
		return http.StatusServiceUnavailable, "provider_unavailable", "the token expired and the platform did not renew it; try again later"
	case errors.Is(err, worker.ErrAppRenews):
		return http.StatusConflict, "token_expired", "the app's token for this account has expired and the app renews it itself (caddy credgate app-refresh off lets credgate renew it)"
	case errors.Is(err, worker.ErrExpiryUnknown):
		return http.StatusConflict, "expiry_unknown", "the app's token for this account has no known expiry (caddy credgate app-expiry-column names the app's column)"
	case errors.Is(err, worker.ErrRenewalPending):
		return http.StatusServiceUnavailable, "renewal_pending", "the token is being renewed (or its renewal stored) elsewhere; try again in a few seconds"
	}
	return 0, "", ""
}

func isPlatformError(err error) bool {
	_, ok := errors.AsType[*oauth.Error](err)
	return ok
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
	return parseInternalHandler(d, "credgate_egress", &e.ServiceToken, &e.MinValidity, func(d *caddyfile.Dispenser, opt string) (bool, error) {
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
