package caddymodule

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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeJSONBody is writeJSON for a body already encoded, with its length.
func writeJSONBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	noteCode(w, code)
	writeJSON(w, status, map[string]apiError{"error": {Code: code, Message: message}})
}

// writeStoreError maps a storage failure by its kind:
//   - the database unreachable or not answering in time (dberr.Unavailable)
//     is 503 "unavailable", logged at warn (the pass-through keeps working
//     meanwhile);
//   - a client that went away gets 499 and a debug line: nothing is wrong;
//   - credentials that changed while being read are 409 "conflict";
//   - anything else is a 500 "internal" carrying an opaque error id, which
//     the error-level log line carries too, so a report leads to the line.
func (h *Handler) writeStoreError(w http.ResponseWriter, r *http.Request, doing string, err error) {
	writeStoreError(h.logger, w, r, doing, err)
}

// storeErrorCode is the error code writeStoreError answers err with: the
// one place that sorts a storage failure, for writeStoreError and for the
// callers that count the failure too (the token reads' audit).
func storeErrorCode(r *http.Request, err error) string {
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

func writeStoreError(log *zap.Logger, w http.ResponseWriter, r *http.Request, doing string, err error) {
	switch code := storeErrorCode(r, err); code {
	case "unavailable":
		log.Warn(doing+": database unavailable", errField(err), pathField(r))
		writeError(w, http.StatusServiceUnavailable, code, "credential storage is temporarily unavailable")
	case "client_closed_request":
		log.Debug(doing+": the client went away", pathField(r))
		writeError(w, statusClientClosedRequest, code, "the request was cancelled")
	case "conflict":
		log.Info(doing+": credentials changed meanwhile", pathField(r))
		writeError(w, http.StatusConflict, code, "the credentials changed meanwhile; try again")
	default:
		id := errorID()
		log.Error(doing, errField(err), pathField(r), zap.String("error_id", id))
		writeError(w, http.StatusInternalServerError, "internal", "internal error (id "+id+")")
	}
}

// statusClientClosedRequest is nginx's status for a client that closed
// the connection first: no one reads it, but logs and traces tell it from
// a real failure.
const statusClientClosedRequest = 499

// errorID is a short random id tying a 500 to its log line.
func errorID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// bearerMatches checks "Authorization: Bearer <want>" in constant time;
// an empty want matches nothing.
func bearerMatches(r *http.Request, want secret.Value) bool {
	if want.IsZero() {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(want.Reveal())) == 1
}

// redirectWith sends the browser back to the app's return path with extra
// query parameters (connected=…, or oauth_error=…&platform=…).
func redirectWith(w http.ResponseWriter, r *http.Request, returnTo string, params url.Values) {
	u, err := url.Parse(returnTo)
	if err != nil || returnTo == "" {
		u = &url.URL{Path: "/"}
	}
	if code := params.Get("oauth_error"); code != "" {
		noteCode(w, code)
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}
