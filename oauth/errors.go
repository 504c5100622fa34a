package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Code is a stable, platform-independent error code. The audit log,
// metrics and the user-facing redirect (?oauth_error=<code>) all use it.
type Code string

// The codes. New ones may be added; existing ones never change meaning.
const (
	CodeAccessDenied        Code = "access_denied"        // the user said no at the consent screen
	CodeInvalidGrant        Code = "invalid_grant"        // code or refresh token unknown, used, expired or revoked
	CodeInvalidRequest      Code = "invalid_request"      // the provider rejected the request as malformed
	CodeInvalidClient       Code = "invalid_client"       // client id/secret (or auth method) rejected
	CodeInvalidScope        Code = "invalid_scope"        // a requested scope is not allowed
	CodeInsufficientScope   Code = "insufficient_scope"   // the token lacks a permission the call needs
	CodeRateLimited         Code = "rate_limited"         // slow down and retry later
	CodeProviderUnavailable Code = "provider_unavailable" // 5xx, timeout, HTML or empty body: retry later
	CodeInvalidResponse     Code = "invalid_response"     // a 2xx answer that is not a usable token or profile
	CodeNeedsReauth         Code = "needs_reauth"         // no way to renew without the user (no refresh token, Facebook)
	CodeUnsupported         Code = "unsupported"          // the platform has no such operation (revoke on LinkedIn)
	CodeServerError         Code = "server_error"         // the provider reported an internal error
)

// Codes lists every code, for the closed label sets of metrics (a
// series per code exists from the start, so the first of each counts).
func Codes() []Code {
	return []Code{CodeAccessDenied, CodeInvalidGrant, CodeInvalidRequest, CodeInvalidClient, CodeInvalidScope,
		CodeInsufficientScope, CodeRateLimited, CodeProviderUnavailable, CodeInvalidResponse, CodeNeedsReauth,
		CodeUnsupported, CodeServerError}
}

// Error is every failure this package returns. Its message never holds a
// token, a code, a secret or the provider's raw body: only the operation,
// the stable code, the HTTP status and a short sanitised description.
type Error struct {
	Code Code
	// Op is what failed: "exchange", "refresh", "profile", "revoke",
	// "long_lived_exchange".
	Op       string
	Platform string
	// Status is the provider's HTTP status, 0 when none was received.
	Status int
	// Description is the provider's own error description, cut short and
	// stripped of anything that looks like a token.
	Description string
	// Retryable says whether the same call may succeed later.
	Retryable bool
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", e.Platform, e.Op, e.Code)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	return b.String()
}

// Is makes errors.Is match an *Error by its Code (and its Op, when the
// target names one): errors.Is(err, oauth.ErrRevokeUnsupported) holds for
// every platform's "revoke unsupported", and errors.Is(err,
// &oauth.Error{Code: oauth.CodeInvalidGrant}) for any invalid grant.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Op == "" || t.Op == e.Op)
}

// with returns a copy of e with changes applied: errors are values once
// returned, never changed in place (a caller may hold the original).
func (e *Error) with(change func(*Error)) *Error {
	c := *e
	change(&c)
	return &c
}

// CodeOf returns the stable code of err, or provider_unavailable for an
// error that did not come from this package.
func CodeOf(err error) Code {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return CodeProviderUnavailable
}

// ErrRevokeUnsupported is returned by Revoke on platforms with no revoke
// endpoint; the caller still wipes the credential locally.
var ErrRevokeUnsupported = &Error{Code: CodeUnsupported, Op: "revoke", Description: "the platform has no token revocation endpoint"}

func retryable(c Code) bool {
	switch c {
	case CodeRateLimited, CodeProviderUnavailable, CodeServerError:
		return true
	}
	return false
}

func newError(platform, op string, code Code, status int, desc string) *Error {
	return &Error{Code: code, Op: op, Platform: platform, Status: status, Description: sanitize(desc), Retryable: retryable(code)}
}

// sanitize keeps a provider's error description safe to log and show: a
// provider that echoes the request, or a misconfigured one, must not put
// a token or a secret into credgate's logs or audit rows. It
//   - redacts the value of anything named like a secret (client_secret=…,
//     access_token: …, code=…, Bearer …);
//   - redacts long runs of token characters (24 or more), long hex runs
//     (16 or more) and shorter runs that mix letters and digits (12 or
//     more), which is what keys, tokens, codes and JWTs look like;
//   - folds control characters (a forged log line) to spaces;
//   - caps the result at 200 bytes, on a character boundary.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = namedSecret.ReplaceAllString(s, "${1}[redacted]")
	s = bearer.ReplaceAllString(s, "${1}[redacted]")
	s = tokenRun.ReplaceAllStringFunc(s, func(run string) string {
		switch {
		case len(run) >= 24, len(run) >= 16 && hexOnly.MatchString(run), hasLetterAndDigit(run):
			return "[redacted]"
		}
		return run
	})
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

var (
	// namedSecret is "<secret-ish name>=value" or ": value".
	namedSecret = regexp.MustCompile(`(?i)\b((?:client_secret|secret|access_token|refresh_token|id_token|token|password|passwd|api_key|apikey|key|code|code_verifier|assertion|authorization)\s*[=:]\s*"?)[^\s"&,;]+`)
	bearer      = regexp.MustCompile(`(?i)\b((?:bearer|basic)\s+)[^\s"&,;]+`)
	// tokenRun is a run of the characters tokens are made of, at least
	// 12 long (shorter runs are left alone).
	tokenRun = regexp.MustCompile(`[A-Za-z0-9_\-+/=.~]{12,}`)
	hexOnly  = regexp.MustCompile(`^[0-9A-Fa-f]+$`)
)

func hasLetterAndDigit(w string) bool {
	letters, digits := false, false
	for _, r := range w {
		switch {
		case r >= '0' && r <= '9':
			digits = true
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			letters = true
		}
	}
	return digits && letters
}

// errorParser turns a provider error body into a code and description; it
// returns ok=false when the body is not an error in its shape.
type errorParser func(status int, body []byte) (code Code, desc string, ok bool)

// parseRFC6749 reads {"error": "...", "error_description": "..."}.
func parseRFC6749(status int, body []byte) (Code, string, bool) {
	var e struct {
		Error       any    `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", "", false
	}
	name, ok := e.Error.(string)
	if !ok || name == "" {
		return "", "", false
	}
	return rfcCode(name, status), e.Description, true
}

func rfcCode(name string, status int) Code {
	switch name {
	case "access_denied", "invalid_grant", "invalid_request", "invalid_client", "invalid_scope", "insufficient_scope", "server_error":
		return Code(name)
	case "unauthorized_client", "unsupported_grant_type":
		return CodeInvalidClient
	case "temporarily_unavailable":
		return CodeProviderUnavailable
	case "slow_down", "rate_limit_exceeded", "too_many_requests":
		return CodeRateLimited
	}
	return statusCode(status)
}

// parseGraph reads Facebook's {"error": {"message","type","code","error_subcode"}}.
func parseGraph(status int, body []byte) (Code, string, bool) {
	var e struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    int    `json:"code"`
			Subcode int    `json:"error_subcode"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == nil {
		return "", "", false
	}
	return graphCode(e.Error.Code, e.Error.Subcode, e.Error.Message, status), e.Error.Message, true
}

// graphCode maps Graph API error codes
// (developers.facebook.com/docs/graph-api/guides/error-handling).
func graphCode(code, subcode int, message string, status int) Code {
	switch {
	case code == 190 || code == 102 || code == 463 || code == 467:
		return CodeInvalidGrant // token expired, invalidated or session gone
	case code == 100 && (subcode == 36007 || subcode == 36009 || subcode == 36008):
		return CodeInvalidGrant // code expired / used / redirect mismatch
	case code == 101 || strings.Contains(strings.ToLower(message), "client secret"):
		return CodeInvalidClient
	case code == 4 || code == 17 || code == 32 || code == 341 || code == 613:
		return CodeRateLimited
	case code == 10 || (code >= 200 && code <= 299):
		return CodeInsufficientScope
	case code == 1 || code == 2:
		return CodeProviderUnavailable // "API Unknown" / "API Service": temporary
	case code == 100:
		return CodeInvalidRequest
	}
	return statusCode(status)
}

// parseInstagramFlat reads Instagram's {"error_type","code","error_message"}.
func parseInstagramFlat(status int, body []byte) (Code, string, bool) {
	var e struct {
		Type    string `json:"error_type"`
		Code    int    `json:"code"`
		Message string `json:"error_message"`
	}
	if json.Unmarshal(body, &e) != nil || e.Type == "" {
		return "", "", false
	}
	msg := strings.ToLower(e.Message)
	switch {
	case e.Code == 190 || strings.Contains(msg, "access token") || strings.Contains(msg, "session has expired"):
		// A dead or revoked token: the account needs the user again.
		return CodeInvalidGrant, e.Message, true
	case strings.Contains(msg, "code") && (strings.Contains(msg, "not found") || strings.Contains(msg, "used") || strings.Contains(msg, "expired")):
		return CodeInvalidGrant, e.Message, true
	case strings.Contains(msg, "client") || strings.Contains(msg, "app secret") || strings.Contains(msg, "client_secret"):
		return CodeInvalidClient, e.Message, true
	case strings.Contains(msg, "redirect"):
		return CodeInvalidRequest, e.Message, true
	}
	if e.Type == "OAuthException" && status == http.StatusBadRequest {
		return CodeInvalidRequest, e.Message, true
	}
	return statusCode(status), e.Message, true
}

// anyShape tries every known shape: errors delivered with HTTP 200 may
// come in any of them. Every shape has a key that begins with "error"
// (matched without regard to case, as encoding/json does, or written
// with a \u escape), so a body without one — most successful answers,
// token responses with an ID token among them — is not decoded three
// times to find nothing.
func anyShape(status int, body []byte) (Code, string, bool) {
	if !mayNameAnError(body) {
		return "", "", false
	}
	return everyShape(status, body)
}

// mayNameAnError reports whether body holds "error" in any case, or a
// \u escape (which could spell it).
func mayNameAnError(body []byte) bool {
	if bytes.Contains(body, []byte(`\u`)) {
		return true
	}
	for i := 0; i+5 <= len(body); i++ {
		if c := body[i] | 0x20; c == 'e' && bytes.EqualFold(body[i:i+5], []byte("error")) {
			return true
		}
	}
	return false
}

// everyShape is anyShape without the shortcut.
func everyShape(status int, body []byte) (Code, string, bool) {
	for _, p := range []errorParser{parseGraph, parseInstagramFlat, parseRFC6749} {
		if c, d, ok := p(status, body); ok {
			return c, d, true
		}
	}
	return "", "", false
}

// statusCode is the fallback when the body says nothing usable.
func statusCode(status int) Code {
	switch {
	case status == http.StatusTooManyRequests:
		return CodeRateLimited
	case status == http.StatusUnauthorized:
		return CodeInvalidClient
	case status == http.StatusForbidden:
		return CodeInsufficientScope
	case status >= 500 || status == 0:
		return CodeProviderUnavailable
	case status >= 400:
		return CodeInvalidRequest
	}
	return CodeInvalidResponse
}

// CallbackError reads the error a platform put on the redirect back to the
// app (?error=…), or returns nil when there is none. Each platform words a
// refusal its own way; all of them become access_denied.
func CallbackError(platform string, q interface{ Get(string) string }) *Error {
	name := q.Get("error")
	if name == "" {
		return nil
	}
	code := rfcCode(name, 400)
	switch name {
	case "access_denied", "user_cancelled_authorize", "user_cancelled_login", "user_denied":
		code = CodeAccessDenied
	}
	return newError(platform, "authorize", code, 0, q.Get("error_description"))
}
