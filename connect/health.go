package connect

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// StatusUndecryptable is the health status of an account whose blob does
// not open with the configured keys (tampered, malformed, or sealed with
// a key the keyring lacks): a token read answers decrypt_failed.
const StatusUndecryptable = "undecryptable"

// AccountHealth is what a user's health check shows of one account: no
// secret.
type AccountHealth struct {
	Platform        string     `json:"platform"`
	Status          string     `json:"status"`
	SecondsToExpiry *int64     `json:"seconds_to_expiry"`
	NeedsReauth     bool       `json:"needs_reauth"`
	LastRefreshedAt *time.Time `json:"last_refreshed_at"`
	// LastRefresh is the outcome of the latest renewal attempt
	// ("success" or "failed"), null before the first one.
	LastRefresh      *string    `json:"last_refresh"`
	LastRefreshAt    *time.Time `json:"last_refresh_at,omitempty"`
	LastRefreshError string     `json:"last_refresh_error,omitempty"`
}

// Health reports userID's accounts as of now. Each account is opened as a
// token read opens it (vault.Accounts.ListOpened), so that what it
// reports is what a read would find: a blob that does not open is
// undecryptable and needs the user to connect again, whatever the row's
// status and key id column say. ctx's budget bounds the reads.
func (f *Flows) Health(ctx context.Context, userID string, now time.Time) ([]AccountHealth, error) {
	accounts, err := f.Accounts.ListOpened(ctx, f.DB, userID)
	if err != nil {
		return nil, fmt.Errorf("listing accounts: %w", err)
	}
	out := []AccountHealth{}
	for _, o := range accounts {
		a := o.Account
		v := AccountHealth{Platform: a.Platform, Status: string(a.Status), LastRefreshedAt: a.LastRefreshedAt}
		if a.ExpiresAt != nil {
			s := int64(a.ExpiresAt.Sub(now).Seconds())
			v.SecondsToExpiry = &s
		}
		v.NeedsReauth = a.Status == vault.StatusNeedsReauth || (a.ExpiresAt != nil && !now.Before(*a.ExpiresAt) && a.Status != vault.StatusDisconnected)
		if vault.Undecryptable(o.Err) {
			v.Status, v.NeedsReauth = StatusUndecryptable, true
			f.auditUndecryptable(ctx, a, o.Err)
		}
		last, found, err := vault.LastAudit(ctx, f.DB, userID, a.Platform, vault.ActionRefresh)
		if err != nil {
			return nil, fmt.Errorf("reading the last renewal: %w", err)
		}
		if found {
			outcome, at := string(last.Status), last.At
			v.LastRefresh, v.LastRefreshAt, v.LastRefreshError = &outcome, &at, last.ErrorCode
		}
		out = append(out, v)
	}
	return out, nil
}

// auditUndecryptable records a blob the health check found not opening:
// a decrypt_failed audit row (during health_check) and a log line, once
// per account until the row changes, so that a page polling the health
// check does not write a row per poll. A failure to record is logged and
// does not fail the health check.
func (f *Flows) auditUndecryptable(ctx context.Context, a vault.Account, cause error) {
	last, found, err := vault.LastAudit(ctx, f.DB, a.UserID, a.Platform, vault.ActionDecryptFailed)
	if err == nil && found && !last.At.Before(a.UpdatedAt) {
		return
	}
	f.logger().Warn("health check: credentials do not decrypt", zap.String("user_id", a.UserID), zap.String("platform", a.Platform), errField(cause))
	if f.DecryptFailed != nil {
		f.DecryptFailed(telemetry.ViaHealthCheck)
	}
	f.Audit.Record(ctx, vault.Event{UserID: a.UserID, Platform: a.Platform, Action: vault.ActionDecryptFailed,
		Status: vault.Failed, ErrorCode: "decrypt_failed", Details: map[string]any{"during": "health_check", "account_id": a.ID}})
}
