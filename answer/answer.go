// Package answer writes credgate's HTTP answers: JSON bodies, the one
// error body every route uses, storage failures sorted by their kind, and
// redirects that carry an error code back to the app. It also counts each
// answer on its route (Tracker), so a code written here reaches the
// route's span and the success-rate metrics without the caller repeating
// it. It knows nothing of Caddy: the handlers in caddymodule and anything
// else that serves credgate's routes write through it.
package answer

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// apiError is the body of every credgate error response:
// {"error":{"code","message"}}. Messages are written for the client and
// never carry an internal error, a token or a stack.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// JSON writes v as the answer's JSON body with status; never cached.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// JSONBody is JSON for a body already encoded, with its length.
func JSONBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}

// Error writes credgate's error body, {"error":{"code","message"}}, and
// notes code for the route's span (Recorder). A 5xx goes to a
// ServerErrors beneath w instead, when there is one.
func Error(w http.ResponseWriter, status int, code, message string) {
	NoteCode(w, code)
	if takeServerError(w, status, code, message) {
		return
	}
	JSON(w, status, map[string]apiError{"error": {Code: code, Message: message}})
}

// StoreErrorCode is the error code StoreError answers err with: the one
// place that sorts a storage failure, for StoreError and for the callers
// that count the failure too (the token reads' audit).
func StoreErrorCode(r *http.Request, err error) string {
	switch {
	case dberr.Unavailable(err):
		return "unavailable"
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return "client_closed_request"
	case errors.Is(err, vault.ErrVersionConflict):
		return "conflict"
	}
	return "internal"
}

// StoreError answers a storage failure by its kind:
//   - the database unreachable or not answering in time (dberr.Unavailable)
//     is 503 "unavailable", logged at warn (the pass-through keeps working
//     meanwhile);
//   - a client that went away gets 499 and a debug line: nothing is wrong;
//   - credentials that changed while being read are 409 "conflict";
//   - anything else is a 500 "internal" carrying an opaque error id, which
//     the error-level log line carries too, so a report leads to the line.
func StoreError(log *zap.Logger, w http.ResponseWriter, r *http.Request, doing string, err error) {
	path := zap.String("path", r.URL.Path)
	switch code := StoreErrorCode(r, err); code {
	case "unavailable":
		log.Warn(doing+": database unavailable", zap.String("error", err.Error()), path)
		Error(w, http.StatusServiceUnavailable, code, "credential storage is temporarily unavailable")
	case "client_closed_request":
		log.Debug(doing+": the client went away", path)
		Error(w, StatusClientClosedRequest, code, "the request was cancelled")
	case "conflict":
		log.Info(doing+": credentials changed meanwhile", path)
		Error(w, http.StatusConflict, code, "the credentials changed meanwhile; try again")
	default:
		id := ErrorID()
		log.Error(doing, zap.String("error", err.Error()), path, zap.String("error_id", id))
		Error(w, http.StatusInternalServerError, "internal", "internal error (id "+id+")")
	}
}

// StatusClientClosedRequest is nginx's status for a client that closed
// the connection first: no one reads it, but logs and traces tell it from
// a real failure.
const StatusClientClosedRequest = 499

// ErrorID is a short random id tying a 500 to its log line.
func ErrorID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// BearerMatches checks "Authorization: Bearer <want>" in constant time;
// an empty want matches nothing.
func BearerMatches(r *http.Request, want secret.Value) bool {
	if want.IsZero() {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(want.Reveal())) == 1
}

// Redirect sends the browser back to the app's return path with extra
// query parameters (connected=…, or oauth_error=…&platform=…); an
// oauth_error is noted for the route's span as Error's code is.
func Redirect(w http.ResponseWriter, r *http.Request, returnTo string, params url.Values) {
	u, err := url.Parse(returnTo)
	if err != nil || returnTo == "" {
		u = &url.URL{Path: "/"}
	}
	if code := params.Get("oauth_error"); code != "" {
		NoteCode(w, code)
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}
