package oauth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"golang.org/x/oauth2"
)

// MaxResponseBytes is the most any provider response may hold.
const MaxResponseBytes = 1 << 20

type opKey struct{}

func withOp(ctx context.Context, op string) context.Context {
	return context.WithValue(ctx, opKey{}, op)
}

func opOf(ctx context.Context) string {
	if op, ok := ctx.Value(opKey{}).(string); ok {
		return op
	}
	return "request"
}

// guard is the RoundTripper every provider call goes through, x/oauth2's
// included. It reads the whole (bounded) body and turns every kind of bad
// answer into an *Error before anyone parses it: oversized, empty or HTML
// bodies, error statuses, and errors delivered with HTTP 200. Only a clean
// 2xx body reaches the caller. x/oauth2 passes transport errors up wrapped
// in *url.Error, so errors.As still finds the *Error.
type guard struct {
	next     http.RoundTripper
	platform string
	parse    errorParser
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	op := opOf(req.Context())
	resp, err := g.next.RoundTrip(req)
	if err != nil {
		return nil, newError(g.platform, op, CodeProviderUnavailable, 0, transportProblem(err))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	resp.Body.Close()
	if err != nil {
		return nil, newError(g.platform, op, CodeProviderUnavailable, resp.StatusCode, transportProblem(err))
	}
	if len(body) > MaxResponseBytes {
		return nil, newError(g.platform, op, CodeProviderUnavailable, resp.StatusCode, "response larger than 1 MiB")
	}
	status := resp.StatusCode
	trimmed := bytes.TrimSpace(body)
	ok2xx := status >= 200 && status < 300
	// An empty 2xx is a valid answer only to a revoke (RFC 7009).
	if ok2xx && len(trimmed) == 0 && op != "revoke" {
		return nil, newError(g.platform, op, CodeProviderUnavailable, status, "empty response")
	}
	if isHTML(resp.Header.Get("Content-Type"), trimmed) {
		code := CodeProviderUnavailable
		if status >= 400 && status < 500 && status != http.StatusTooManyRequests {
			code = statusCode(status)
		}
		return nil, newError(g.platform, op, code, status, "HTML instead of an API response")
	}
	if code, desc, isErr := g.parse(status, trimmed); isErr {
		return nil, newError(g.platform, op, code, status, desc)
	}
	if !ok2xx {
		return nil, newError(g.platform, op, statusCode(status), status, "")
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

func isHTML(contentType string, body []byte) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "text/html" || bytes.HasPrefix(body, []byte("<"))
}

// transportProblem describes a network failure without the URL, which may
// carry an access token in its query.
func transportProblem(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "network error: " + oe.Op
	}
	return "network error"
}

// stripURL drops the *url.Error wrapper http.Client puts around failures:
// its message carries the full URL, and Instagram and Facebook calls carry
// tokens and the client secret in the query.
func stripURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

// asError turns whatever a call returned into an *Error for op.
func (p *Provider) asError(op string, err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.with(func(e *Error) { e.Op = op })
	}
	// A form-encoded error x/oauth2 parsed itself (a 200 carrying
	// error=…, as some providers send).
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok && re.ErrorCode != "" {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		return newError(p.profile.Name, op, rfcCode(re.ErrorCode, status), status, re.ErrorDescription)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "missing access_token"):
		return newError(p.profile.Name, op, CodeInvalidResponse, 200, "no access_token in the response")
	case strings.Contains(msg, "cannot parse"):
		return newError(p.profile.Name, op, CodeInvalidResponse, 200, "malformed token response")
	case strings.Contains(msg, "refresh token is not set"):
		return newError(p.profile.Name, op, CodeNeedsReauth, 0, "no refresh token")
	}
	return newError(p.profile.Name, op, CodeProviderUnavailable, 0, transportProblem(err))
}
