package caddymodule

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

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

func writeError(w http.ResponseWriter, status int, code, message string) {
	noteCode(w, code)
	writeJSON(w, status, map[string]apiError{"error": {Code: code, Message: message}})
}

// writeStoreError maps a database failure: an unreachable database is 503
// "unavailable" (the pass-through keeps working meanwhile); anything else
// is a 500 whose detail stays in the log.
func (h *Handler) writeStoreError(w http.ResponseWriter, r *http.Request, doing string, err error) {
	writeStoreError(h.logger, w, r, doing, err)
}

func writeStoreError(log *zap.Logger, w http.ResponseWriter, r *http.Request, doing string, err error) {
	if unavailable(err) {
		log.Warn(doing+": database unavailable", errField(err), pathField(r))
		writeError(w, http.StatusServiceUnavailable, "unavailable", "credential storage is temporarily unavailable")
		return
	}
	log.Error(doing, errField(err), pathField(r))
	writeError(w, http.StatusInternalServerError, "internal", "internal error")
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

// unavailable reports whether err means the database cannot be reached:
// anything that is not an answer from PostgreSQL (an SQL error) nor one of
// credgate's own data errors — refused or cut connections, EOFs, timeouts.
func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return false
	}
	for _, own := range []error{vault.ErrDecryptionFailed, vault.ErrUnknownKey, vault.ErrMalformedBlob, vault.ErrNotConnected} {
		if errors.Is(err, own) {
			return false
		}
	}
	return true
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
