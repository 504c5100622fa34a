package connect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// Disconnect ends userID's connection to p's platform: it revokes the
// tokens at the platform where it can (audited either way), then wipes
// the account, cancels its renewal and audits the disconnect in one
// transaction. Credentials that no longer decrypt do not block it: they
// are wiped unrevoked, and that is audited. It returns whether the
// platform revoked the tokens; vault.ErrNotConnected when there is no
// account. ctx's budget bounds the read; the revoke and the wipe get
// their own, so a slow platform does not cost the user the local wipe.
func (f *Flows) Disconnect(ctx context.Context, p *oauth.Provider, userID string) (revoked bool, err error) {
	platform := p.Name()
	rctx, cancel := context.WithTimeout(ctx, DBTimeout)
	acct, creds, err := f.Accounts.Get(rctx, f.DB, userID, platform)
	cancel()
	if err != nil && !errors.Is(err, vault.ErrNotConnected) {
		if !vault.Undecryptable(err) {
			return false, fmt.Errorf("reading the account: %w", err)
		}
		f.logger().Warn("disconnecting an account whose credentials do not decrypt", zap.String("platform", platform), errField(err))
		if f.DecryptFailed != nil {
			f.DecryptFailed(telemetry.ViaDisconnect)
		}
		// The token cannot be revoked at the platform: the record must
		// say so.
		f.Audit.Record(ctx, vault.Event{UserID: userID, Platform: platform, Action: vault.ActionDecryptFailed,
			Status: vault.Failed, ErrorCode: "decrypt_failed", Details: map[string]any{"during": "disconnect", "revoked": false}})
	}
	if err == nil && p.CanRevoke() {
		revoked = f.revoke(ctx, p, userID, oauth.TokenSet{AccessToken: creds.AccessToken, RefreshToken: creds.RefreshToken, PlatformUserID: acct.PlatformUserID})
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DBTimeout)
	defer cancel()
	err = vault.InTx(wctx, f.DB, func(tx pgx.Tx) error {
		gone, err := f.Accounts.Disconnect(wctx, tx, userID, platform)
		if err != nil {
			return err
		}
		if err := vault.CancelRenewals(wctx, tx, gone.ID); err != nil {
			return err
		}
		return vault.AppendAudit(wctx, tx, vault.Event{UserID: userID, Platform: platform, Action: vault.ActionDisconnect,
			Status: vault.Success, Details: map[string]any{"revoked": revoked}})
	})
	f.Renewals.Forget(userID, platform) // the back end's reads see it at once
	if err != nil && !errors.Is(err, vault.ErrNotConnected) {
		err = fmt.Errorf("wiping the account: %w", err)
	}
	return revoked, err
}

// revoke withdraws tok at p's platform and audits the outcome. The
// request's cancellation ends it: a user who gave up waiting still has
// the wipe.
func (f *Flows) revoke(ctx context.Context, p *oauth.Provider, userID string, tok oauth.TokenSet) bool {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := p.Revoke(rctx, tok)
	cancel()
	ev := vault.Event{UserID: userID, Platform: p.Name(), Action: vault.ActionRevoke, Status: vault.Success}
	if err != nil {
		ev.Status, ev.ErrorCode = vault.Failed, string(oauth.CodeOf(err))
	}
	f.Audit.Record(ctx, ev)
	return err == nil
}
