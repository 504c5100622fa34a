package backend

import (
	"net/http"
	"strings"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// TokenRoutePrefix is where the token API lives. The public credgate
// handler answers 404 under it, so a token is never served on the app's
// public origin even if the app or a proxy rule would route it.
const TokenRoutePrefix = "/api/internal/credentials/"

// TokenAPI answers
//
//	GET /api/internal/credentials/{user_id}/{platform}/token
//	Authorization: Bearer <service_token>
//
// with the user's current access token (answer.Token), instead of the
// back end reading social_accounts.access_token, which accounts
// connected through the new flow no longer have.
type TokenAPI struct {
	*Service
	// ServeLegacyPlaintext returns the legacy plaintext access_token of
	// an account that backfill has not sealed yet.
	ServeLegacyPlaintext bool
}

// ServeHTTP serves a request under TokenRoutePrefix.
func (t *TokenAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, TokenRoutePrefix)
	early := t.Answers.Early(w, telemetry.RouteToken)
	defer early.Done()
	w = early.Writer()
	if !t.authorized(w, r) {
		return
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] != "token" {
		answer.Error(w, http.StatusNotFound, "not_found", "the token route is "+TokenRoutePrefix+"{user_id}/{platform}/token")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		answer.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
		return
	}
	platform := parts[1]
	id, err := uuid.Parse(parts[0])
	if err != nil {
		answer.Error(w, http.StatusBadRequest, "invalid_user", "user_id must be a UUID")
		return
	}
	// The canonical form: uuid.Parse also takes urn:uuid:… and braces,
	// which PostgreSQL does not.
	user := id.String()
	if _, ok := t.Refresher.Providers[platform]; !ok {
		answer.Error(w, http.StatusNotFound, "unknown_platform", "no such platform is configured")
		return
	}
	if !t.Available() {
		answer.Error(w, http.StatusServiceUnavailable, "unavailable", "credential storage is temporarily unavailable")
		return
	}
	t.BackendReads.Count(platform, vault.ViaTokenAPI)
	early.Traced(r, "credgate.token.read", telemetry.SpanAttrs(platform, ""), func(w http.ResponseWriter, r *http.Request) {
		t.serveToken(w, r, user, platform)
	})
}

func (t *TokenAPI) serveToken(w http.ResponseWriter, r *http.Request, user, platform string) {
	// Reads of one user in a burst go to the database once
	// (worker.RecentFor), as egress's do.
	tok, err := t.Refresher.ReadForBackEnd(r.Context(), user, platform, t.MinValidity, t.ServeLegacyPlaintext)
	source := tok.Source
	// Counted, not written: the app's audit row for this read comes with
	// the window's others (App.AuditReadWindow).
	audit := func(status vault.Outcome, code string) {
		t.ReadAudit.Count(vault.TokenRead{UserID: user, Platform: platform, Via: vault.ViaTokenAPI,
			Status: status, ErrorCode: code, Source: source, Refreshed: tok.Refreshed, RenewalFailed: tok.RenewalFailed})
		outcome := code
		if status == vault.Success {
			outcome = telemetry.Success
		}
		t.Metrics.TokenRead(platform, outcome)
	}
	if err != nil {
		status, code, message := answer.TokenFailure(err)
		if status == 0 {
			// The store failed part way: still a read, counted.
			audit(vault.Failed, answer.StoreErrorCode(r, err))
			answer.StoreError(t.Logger, w, r, "reading a token", err)
			return
		}
		switch code {
		case "decrypt_failed":
			t.Logger.Error("token API: credentials do not decrypt", zap.String("platform", platform), zap.String("error", err.Error()))
		case "provider_unavailable":
			w.Header().Set("Retry-After", "30")
		case "renewal_pending":
			w.Header().Set("Retry-After", "5")
		}
		// A renewal the platform refused is audited by the platform's code
		// (invalid_grant, rate_limited …), not the answer's.
		if answer.IsPlatformError(err) {
			audit(vault.Failed, string(oauth.CodeOf(err)))
		} else {
			audit(vault.Failed, code)
		}
		answer.Error(w, status, code, message)
		return
	}
	view := answer.Token{AccessToken: tok.Credentials.AccessToken.Reveal(), TokenType: tok.Credentials.TokenType,
		ExpiresAt: tok.Account.ExpiresAt, PlatformUserID: tok.Account.PlatformUserID, Scopes: tok.Account.Scopes}
	if view.TokenType == "" {
		view.TokenType = "bearer"
	}
	if view.Scopes == nil {
		view.Scopes = []string{}
	}
	body, err := view.AppendJSON(make([]byte, 0, 256))
	if err != nil {
		audit(vault.Failed, "internal")
		answer.StoreError(t.Logger, w, r, "answering a token read", err)
		return
	}
	audit(vault.Success, "")
	answer.JSONBody(w, http.StatusOK, body)
}
