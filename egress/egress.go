// Package egress is the egress proxy's parts that need no Caddy: which
// platform and API path a call names (and that it cannot name another
// host), which of the caller's headers never go on, when a call may be
// sent again, a request body bounded in time, the transport to the
// platforms, and the round trip that renews a refused token once and
// retries the call when that does no harm. caddymodule's credgate_egress
// handler puts them together with the service token, the user's token
// read and the answers.
package egress

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/worker"
)

// NewTransport is the transport to the platforms: pooled connections per
// platform host, like reverse_proxy's, with reverse_proxy's kinds of
// bounds. A platform that does not accept within dial (TCP, then TLS) or
// does not start its answer within responseHeader of the whole call
// being sent fails the call, rather than holding it for as long as the
// caller waits.
func NewTransport(dial, responseHeader time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	dialer := &net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}
	t.DialContext = dialer.DialContext
	t.TLSHandshakeTimeout = dial
	t.ResponseHeaderTimeout = responseHeader
	return t
}

// dropHeaders are the request headers never forwarded: credgate's own, and
// what would let the caller steer the connection.
var dropHeaders = []string{"Authorization", "X-Credgate-User", RetryHeader, "Cookie", "Proxy-Authorization", "Forwarded",
	"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// DropCallerHeaders removes dropHeaders from an outgoing call.
func DropCallerHeaders(h http.Header) {
	for _, name := range dropHeaders {
		h.Del(name)
	}
}

// RetryHeader is how the app says that a call which is not idempotent
// (a POST, a PATCH) may be sent twice: "X-Credgate-Retry: safe". Without
// it such a call is never resent, since the platform may have acted on
// the first send although it answered 401.
const RetryHeader = "X-Credgate-Retry"

// RenewedHeader marks the platform's refusal of a call credgate did not
// send again: the token is renewed, and the app may resend the call if
// it knows the platform did not act on it.
const RenewedHeader = "X-Credgate-Renewed"

// MayResend reports whether a call may be sent again after the platform
// refused its token: idempotent methods (RFC 9110 §9.2.2) always, others
// only when the app says so with RetryHeader.
func MayResend(r *http.Request) (bool, error) {
	switch v := r.Header.Values(RetryHeader); {
	case len(v) == 0:
	case len(v) == 1 && strings.EqualFold(strings.TrimSpace(v[0]), "safe"):
		return true, nil
	default:
		return false, errors.New(RetryHeader + " takes one value, safe")
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true, nil
	}
	return false, nil
}

// boundedBody is a request body that must arrive by a deadline, set as
// the connection's read deadline: a slow body then fails its read instead
// of holding the call, and its connection, open. The deadline is lifted
// once the body has all arrived, so it never cuts short the wait for the
// platform's answer (net/http watches the connection from then on, and a
// read that times out there would cancel the call).
type boundedBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	timedOut atomic.Bool
}

// BoundBody bounds body to arrive within d. Where the connection
// takes no deadline (a writer that does not unwrap to net/http's), the
// body is left as it is.
func BoundBody(w http.ResponseWriter, body io.ReadCloser, d time.Duration) io.ReadCloser {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(d)) != nil {
		return body
	}
	return &boundedBody{ReadCloser: body, rc: rc}
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.timedOut.Store(true)
	}
	return n, err
}

// BodyTimedOut reports whether r's body missed its deadline.
func BodyTimedOut(r *http.Request) bool {
	b, ok := r.Body.(*boundedBody)
	return ok && b.timedOut.Load()
}

// Target reads /{platform}/{api path} from the request. The API
// path is cleaned and must stay a path: no "..", no scheme or host, no
// absolute-form request URI.
func Target(r *http.Request) (platform, apiPath, rawPath string, err error) {
	if r.URL.IsAbs() || r.URL.Host != "" || r.URL.User != nil {
		return "", "", "", errors.New("the request URI must be a path: /{platform}/{api path}")
	}
	raw := r.URL.EscapedPath()
	if strings.Contains(raw, `\`) || strings.Contains(strings.ToLower(raw), "%2f") || strings.Contains(strings.ToLower(raw), "%5c") {
		return "", "", "", errors.New("encoded slashes are not allowed in the path")
	}
	rest, ok := strings.CutPrefix(raw, "/")
	platform, tail, _ := strings.Cut(rest, "/")
	if !ok || platform == "" || tail == "" {
		return "", "", "", errors.New("the path is /{platform}/{api path}")
	}
	decoded, err := url.PathUnescape("/" + tail)
	if err != nil {
		return "", "", "", errors.New("the path is not valid percent-encoding")
	}
	for _, seg := range strings.Split(decoded, "/") {
		if seg == ".." || seg == "." {
			return "", "", "", errors.New(`"." and ".." are not allowed in the path`)
		}
	}
	if strings.ContainsAny(decoded, "\x00\r\n@") || strings.HasPrefix(decoded, "//") {
		return "", "", "", errors.New("the path holds characters that could change the target")
	}
	// The path goes on as the app encoded it (a LinkedIn URN keeps its
	// %3A), with its decoded form beside it, as net/url wants.
	return platform, decoded, "/" + tail, nil
}

// URL is where a call goes: the API base, with the path as the app
// encoded it.
func URL(base *url.URL, apiPath, rawPath, rawQuery string) *url.URL {
	return &url.URL{Scheme: base.Scheme, Host: base.Host, Path: strings.TrimRight(base.Path, "/") + apiPath,
		RawPath: strings.TrimRight(base.EscapedPath(), "/") + rawPath, RawQuery: rawQuery}
}

// RenewingTransport sends one call with the user's token and, when the
// platform refuses the token (401, or the Graph APIs' error 190), renews
// it once; it retries once if the call may be sent again, and otherwise
// hands back the platform's refusal marked with RenewedHeader.
type RenewingTransport struct {
	// Next sends the call (Transport's, pooled per platform host).
	Next http.RoundTripper
	// Platform is the call's platform: how a refused token looks differs.
	Platform string
	// Token is the user's access token.
	Token secret.Value
	// Body, when the call has one kept in memory, is sent on each try.
	Body []byte
	// Retryable: the call may be sent again after a renewal (MayResend,
	// and a body that can be).
	Retryable bool
	// Renew renews the rejected token and returns the new one; it returns
	// worker.ErrRefusedFresh when the token was just issued.
	Renew func(rejected secret.Value) (secret.Value, error)

	renewErr error
}

// RenewErr is why the renewal of a refused token failed, nil if none
// failed: the proxy's error handler answers with it.
func (t *RenewingTransport) RenewErr() error { return t.renewErr }

func (t *RenewingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	send := func(out *http.Request, token secret.Value) (*http.Response, error) {
		out.Header.Set("Authorization", "Bearer "+token.Reveal())
		if t.Body != nil {
			out.Body = io.NopCloser(bytes.NewReader(t.Body))
			out.ContentLength = int64(len(t.Body))
		}
		return t.Next.RoundTrip(out)
	}
	// The first attempt uses the outgoing request as it is (it is the
	// proxy's own copy); only a retry needs a fresh one.
	resp, err := send(req, t.Token)
	if err != nil || !tokenRefused(t.Platform, resp) {
		return resp, err
	}
	renewed, err := t.Renew(t.Token)
	if errors.Is(err, worker.ErrRefusedFresh) {
		// Refused although just issued: the refusal is not about the
		// token's age, and the app sees the platform's answer as it is.
		return resp, nil
	}
	if err != nil {
		resp.Body.Close()
		t.renewErr = err
		return nil, fmt.Errorf("renewing a refused token: %w", err)
	}
	if !t.Retryable {
		// The next call has a working token; whether this one may go
		// again is the app's to decide.
		resp.Header.Set(RenewedHeader, "true")
		return resp, nil
	}
	resp.Body.Close()
	return send(req.Clone(req.Context()), renewed)
}

// tokenRefused reports whether the platform refused the access token
// itself. X and LinkedIn answer 401; the Graph APIs (Facebook, Instagram)
// answer 400 or 401 with error code 190. The body is read (it is a small
// error document) and put back.
func tokenRefused(platform string, resp *http.Response) bool {
	if resp.StatusCode == http.StatusUnauthorized {
		return true
	}
	if (platform != "facebook" && platform != "instagram") || resp.StatusCode != http.StatusBadRequest {
		return false
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	// Put back what was read in front of whatever was not, keeping the
	// original body's Close.
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(raw), resp.Body), resp.Body}
	var graph struct {
		Error struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	return json.Unmarshal(raw, &graph) == nil && graph.Error.Code == 190
}
