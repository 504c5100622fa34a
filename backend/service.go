// Package backend serves the app's back end the user's current token, so
// that the app never has to store one: the token API (TokenAPI) hands it
// the token, and the egress proxy (Egress) makes the platform call with
// the token added. Both live on an internal listener, authenticate the
// back end with a service token, renew a token that expires within
// MinValidity before it is used, and count every read into the audit
// window. They are plain net/http handlers; caddymodule's credgate_tokens
// and credgate_egress provision them from the Caddyfile.
package backend

import (
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Service is what the token API and egress share.
type Service struct {
	// Token is the service token the back end sends as a bearer token.
	Token secret.Value
	// MinValidity: a token that expires sooner is renewed first.
	MinValidity time.Duration

	Refresher *worker.Refresher
	Metrics   *telemetry.Metrics
	// ReadAudit counts each read into the window's token_read audit
	// rows; BackendReads counts it for the rollout's view of whether the
	// back end reads through credgate yet.
	ReadAudit    *vault.ReadAudit
	BackendReads *vault.BackendReads
	// Available says the credential storage can be used (the database
	// answers and accepted the keys); until then reads answer 503.
	Available func() bool
	Answers   answer.Tracker
	Logger    *zap.Logger
}

// authorized answers 401 unless the request carries the service token.
// It comes first: without the token nothing about routes, users or
// platforms is revealed.
func (s *Service) authorized(w http.ResponseWriter, r *http.Request) bool {
	if answer.BearerMatches(r, s.Token) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="credgate"`)
	answer.Error(w, http.StatusUnauthorized, "unauthorized", "the service token is missing or wrong")
	return false
}
