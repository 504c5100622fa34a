package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
)

// What an erasure did about one account's token at its platform.
const (
	RevokeDone           = "revoked"
	RevokeAlreadyInvalid = "already_invalid" // the platform says the token is dead already
	RevokeUnsupported    = "unsupported"     // the platform has no revocation (LinkedIn, Instagram)
	RevokeNoProvider     = "no_provider"     // no provider of that name is configured
	RevokeNoToken        = "no_token"        // the account holds no token (disconnected)
	RevokeUndecryptable  = "undecryptable"   // the blob does not open with the keys
)

// Revocation is one account's outcome.
type Revocation struct {
	Platform string
	Outcome  string
}

// eraseAttempts bounds how often an erasure revokes again because a
// renewal or a connect changed the accounts meanwhile.
const eraseAttempts = 3

// EraseUser erases userID (vault.EraseUser): their accounts, OAuth
// states and the user id in their audit rows. With revoke, it first
// revokes each account's token at its platform, where the platform can
// (providers: the configured ones); a revocation that fails for another
// reason than a dead token stops it before anything is deleted, since
// the token could never be revoked afterwards. The accounts it deletes
// must be the ones it revoked (a renewal in between would leave a live
// token): otherwise it revokes again.
func EraseUser(ctx context.Context, db vault.DB, accounts *vault.Accounts, providers map[string]*oauth.Provider,
	userID string, revoke bool) (vault.Erasure, []Revocation, error) {
	settings, err := accounts.Settings(ctx)
	if err != nil {
		return vault.Erasure{}, nil, err
	}
	if !revoke {
		e, err := vault.EraseUser(ctx, db, settings, userID, vault.EraseOptions{Details: map[string]any{"revoke": false}})
		return e, nil, err
	}
	for attempt := 1; ; attempt++ {
		list, err := accounts.List(ctx, db, userID)
		if err != nil {
			return vault.Erasure{}, nil, err
		}
		expect := make([]vault.ErasedAccount, 0, len(list))
		var revocations []Revocation
		outcomes := map[string]any{}
		for _, a := range list {
			expect = append(expect, vault.ErasedAccount{ID: a.ID, Platform: a.Platform, Version: a.Version})
			outcome, err := revokeAccount(ctx, db, accounts, providers[a.Platform], a)
			if err != nil {
				return vault.Erasure{}, revocations, err
			}
			revocations = append(revocations, Revocation{Platform: a.Platform, Outcome: outcome})
			outcomes[a.Platform] = outcome
		}
		e, err := vault.EraseUser(ctx, db, settings, userID, vault.EraseOptions{Expect: expect,
			Details: map[string]any{"revoke": true, "revocations": outcomes}})
		if errors.Is(err, vault.ErrAccountsChanged) && attempt < eraseAttempts {
			continue
		}
		return e, revocations, err
	}
}

// revokeAccount revokes the current token of account a at p, and
// records the attempt as a revoke audit row that names no user.
func revokeAccount(ctx context.Context, db vault.DB, accounts *vault.Accounts, p *oauth.Provider, a vault.Account) (string, error) {
	switch {
	case p == nil:
		return RevokeNoProvider, nil
	case !p.CanRevoke():
		return RevokeUnsupported, nil
	}
	set := oauth.TokenSet{PlatformUserID: a.PlatformUserID}
	_, creds, err := accounts.Get(ctx, db, a.UserID, a.Platform)
	switch {
	case err == nil:
		set.AccessToken, set.RefreshToken = creds.AccessToken, creds.RefreshToken
	case errors.Is(err, vault.ErrDecryptionFailed), errors.Is(err, vault.ErrUnknownKey), errors.Is(err, vault.ErrMalformedBlob):
		return RevokeUndecryptable, nil
	case errors.Is(err, vault.ErrNotConnected):
		// A row only the app's plaintext holds a token for.
		_, access, lerr := accounts.LegacyToken(ctx, db, a.UserID, a.Platform)
		if errors.Is(lerr, vault.ErrNotConnected) {
			return RevokeNoToken, nil
		}
		if lerr != nil {
			return "", lerr
		}
		set.AccessToken = access
	default:
		return "", err
	}
	outcome := RevokeDone
	ev := vault.Event{Platform: a.Platform, Action: vault.ActionRevoke, Status: vault.Success, Details: map[string]any{"during": "erasure"}}
	if rerr := p.Revoke(ctx, set); rerr != nil {
		code := oauth.CodeOf(rerr)
		if code != oauth.CodeInvalidGrant && code != oauth.CodeNeedsReauth {
			return "", fmt.Errorf("revoking the %s token: %w; nothing was deleted: run it again once the platform accepts the revocation, or without --revoke to erase without revoking", a.Platform, rerr)
		}
		outcome, ev.Status, ev.ErrorCode = RevokeAlreadyInvalid, vault.Failed, string(code)
	}
	return outcome, vault.AppendAudit(ctx, db, ev)
}
