package backend

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/egress"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Egress forwards the back end's platform API calls with the user's
// current token added:
//
//	POST /{platform}/{the platform's API path}?{query}
//	Authorization: Bearer <service_token>
//	X-Credgate-User: <user uuid>
//	X-Credgate-Retry: safe   (optional: the call may be sent twice)
//
// Only a configured platform's API base is ever reached (Bases): the
// host never comes from the request.
type Egress struct {
	*Service
	// MaxRetryBody is the largest request body read whole before the
	// platform is called, and kept so the call can be sent again after a
	// renewal.
	MaxRetryBody int64
	// BodyTimeout bounds the time a call's request body may take to
	// arrive, counted from when egress takes the call.
	BodyTimeout time.Duration
	// MaxInFlight is how many calls are served at once, from the first
	// byte of the body to the last byte of the platform's answer.
	MaxInFlight int
	// Transport reaches the platforms (egress.NewTransport).
	Transport http.RoundTripper
	// Bases are each configured platform's API base.
	Bases map[string]*url.URL

	// inFlight counts the calls being served (MaxInFlight).
	inFlight atomic.Int64
}

// ServeHTTP forwards one API call.
func (e *Egress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	early := e.Answers.Early(w, telemetry.RouteEgress)
	defer early.Done()
	w = early.Writer()
	// From here every answer, even a refusal, waits for the body at most
	// BodyTimeout: net/http reads what the handler left before it
	// answers on a kept-alive connection.
	// (Caddy wraps even an empty body: the length says whether there is
	// one, -1 for chunked.)
	hasBody := r.ContentLength != 0
	if hasBody {
		r.Body = egress.BoundBody(w, r.Body, e.BodyTimeout)
	}
	if !e.authorized(w, r) {
		return
	}
	platform, apiPath, rawPath, err := egress.Target(r)
	if err != nil {
		answer.Error(w, http.StatusBadRequest, "invalid_path", err.Error())
		return
	}
	base, ok := e.Bases[platform]
	if !ok {
		answer.Error(w, http.StatusNotFound, "unknown_platform", "no such platform is configured, or it has no API base")
		return
	}
	id, err := uuid.Parse(r.Header.Get("X-Credgate-User"))
	if err != nil {
		answer.Error(w, http.StatusBadRequest, "invalid_user", "X-Credgate-User must be the user's UUID")
		return
	}
	user := id.String()
	resend, err := egress.MayResend(r)
	if err != nil {
		answer.Error(w, http.StatusBadRequest, "invalid_retry", err.Error())
		return
	}
	if !e.admit() {
		e.Metrics.Egress(platform, "too_many_requests")
		if hasBody {
			// Answer now rather than after reading the body to keep the
			// connection.
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Retry-After", "1")
		answer.Error(w, http.StatusTooManyRequests, "too_many_requests", "more calls with this service token are in flight than max_in_flight allows; try again shortly")
		return
	}
	defer e.inFlight.Add(-1)
	if !e.Available() {
		answer.Error(w, http.StatusServiceUnavailable, "unavailable", "credential storage is temporarily unavailable")
		return
	}
	e.BackendReads.Count(platform, vault.ViaEgress)
	early.Traced(r, "credgate.egress", telemetry.SpanAttrs(platform, ""), func(w http.ResponseWriter, r *http.Request) {
		e.forward(w, r, user, platform, base, apiPath, rawPath, resend)
	})
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
	tok, err := e.Refresher.ReadRecent(ctx, user, platform, e.MinValidity, "egress")
	token := tok.Credentials.AccessToken
	if err != nil {
		e.fail(w, r, user, platform, err)
		return
	}
	// A call the platform refused for its token is sent again only when
	// sending it twice does no harm (resend), and only if its body can
	// be: a call without one always, one with a body kept in memory.
	retryable := resend && (body != nil || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0)
	rt := &egress.RenewingTransport{Next: e.Transport, Platform: platform, Token: token, Body: body, Retryable: retryable,
		// The renewal is audited by the refresher (trigger egress), as
		// are its failures.
		Renew: func(rejected secret.Value) (secret.Value, error) {
			e.Refresher.Forget(user, platform)
			renewed, err := e.Refresher.RenewRejected(ctx, user, platform, rejected, "egress")
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
			e.Metrics.Egress(platform, strconv.Itoa(resp.StatusCode/100)+"xx")
			e.ReadAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaEgress, Status: vault.Success})
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
			e.Metrics.Egress(platform, "provider_unavailable")
			e.ReadAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaEgress, Status: vault.Failed,
				ErrorCode: "provider_unavailable"})
			e.Logger.Info("egress call failed", zap.String("platform", platform), zap.String("error", err.Error()))
			answer.Error(w, http.StatusBadGateway, "provider_unavailable", "the platform did not answer")
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
	status, code, message := answer.TokenFailure(err)
	if status == 0 {
		code = answer.StoreErrorCode(r, err)
	}
	e.Metrics.Egress(platform, code)
	e.ReadAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaEgress, Status: vault.Failed, ErrorCode: code})
	if status == 0 {
		answer.StoreError(e.Logger, w, r, "egress: reading a token", err)
		return
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "30")
	}
	answer.Error(w, status, code, message)
}

// bodyFailed answers a call whose body could not be read: 408 when it
// did not arrive within BodyTimeout, else 400.
func (e *Egress) bodyFailed(w http.ResponseWriter, r *http.Request, platform string) {
	if !egress.BodyTimedOut(r) {
		answer.Error(w, http.StatusBadRequest, "invalid_body", "the request body could not be read")
		return
	}
	e.Metrics.Egress(platform, "request_timeout")
	w.Header().Set("Connection", "close")
	answer.Error(w, http.StatusRequestTimeout, "request_timeout", "the request body did not arrive within body_timeout")
}
