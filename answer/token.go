package answer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// Token is the token API's answer to the app's back end.
type Token struct {
	AccessToken    string     `json:"access_token"`
	TokenType      string     `json:"token_type"`
	ExpiresAt      *time.Time `json:"expires_at"`
	PlatformUserID string     `json:"platform_user_id"`
	Scopes         []string   `json:"scopes"`
}

// AppendJSON appends the answer as encoding/json writes it (the tests
// compare the two): the token API's hottest path, where the encoder's
// reflection cost a fifth of the handler's CPU. An expiry that RFC 3339
// cannot write in its own zone (a year past 9999 there) is written in
// UTC; one it cannot write in UTC either is an error, never a null,
// which would say the token does not expire.
func (v Token) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, v.AccessToken)
	b = append(b, `,"token_type":`...)
	b = appendJSONString(b, v.TokenType)
	b = append(b, `,"expires_at":`...)
	if v.ExpiresAt == nil {
		b = append(b, "null"...)
	} else {
		t, err := v.ExpiresAt.MarshalJSON()
		if err != nil {
			if t, err = v.ExpiresAt.UTC().MarshalJSON(); err != nil {
				return nil, fmt.Errorf("writing the token's expiry: %w", err)
			}
		}
		b = append(b, t...)
	}
	b = append(b, `,"platform_user_id":`...)
	b = appendJSONString(b, v.PlatformUserID)
	b = append(b, `,"scopes":`...)
	if v.Scopes == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, s := range v.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		b = append(b, ']')
	}
	return append(b, "}\n"...), nil
}

// appendJSONString appends s as a JSON string. Printable ASCII that
// encoding/json leaves alone (tokens, ids and scopes are) is copied;
// anything else is left to encoding/json, so the escaping is its own.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// TokenFailureCodes are the codes tokenFailure answers with.
var TokenFailureCodes = []string{"not_connected", "needs_reauth", "decrypt_failed", "provider_unavailable",
	"token_expired", "expiry_unknown", "renewal_pending"}

// TokenReadOutcomes are the token API's outcomes (the outcome label of
// credgate_token_reads_total): success, a code of TokenFailure's, or the
// platform's code for a renewal it refused.
func TokenReadOutcomes() []string {
	out := append([]string{telemetry.Success}, TokenFailureCodes...)
	for _, c := range oauth.Codes() {
		if !slices.Contains(out, string(c)) {
			out = append(out, string(c))
		}
	}
	return out
}

// EgressClasses are the status_class label's values of
// credgate_egress_requests_total: the platform's answer's class, or the
// code credgate answered with.
func EgressClasses() []string {
	out := []string{"2xx", "3xx", "4xx", "5xx", "too_many_requests", "request_timeout"}
	for _, c := range TokenFailureCodes {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// TokenFailure maps a failure to get a token to the answer both the token
// API and the egress proxy give; status 0 for a storage failure.
func TokenFailure(err error) (status int, code, message string) {
	switch {
	case errors.Is(err, vault.ErrNotConnected):
		return http.StatusNotFound, "not_connected", "this user has no connected account on this platform"
	case errors.Is(err, worker.ErrNeedsReauth):
		return http.StatusConflict, "needs_reauth", "the user must reconnect this platform"
	case vault.Undecryptable(err):
		return http.StatusInternalServerError, "decrypt_failed", "the stored credentials cannot be decrypted with the configured keys"
	case IsPlatformError(err):
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

// IsPlatformError says err is the platform's refusal (an *oauth.Error),
// which the token reads audit by the platform's code.
func IsPlatformError(err error) bool {
	_, ok := errors.AsType[*oauth.Error](err)
	return ok
}
