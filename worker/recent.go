package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// RecentFor is how long ReadRecent serves a token again without reading
// the database: a disconnect or a renewal by another replica, or a token
// the app writes on its own, is seen within this long. A change this
// instance makes or sees pass (a reconnect through the app's callback)
// is seen at once (Forget, and every renewal here forgets what it
// replaces). A token the platform refuses meanwhile is renewed through
// RenewRejected anyway.
const RecentFor = time.Second

// forgottenFor is how long a Forget is remembered: longer than any read
// that may have begun before it (the token API gives a read 40 s), so
// that such a read cannot keep what it read once the Forget's mark goes.
const forgottenFor = time.Minute

// recentTokens is what ReadRecent remembers: per user and platform, the
// token read last and until when it may be served again, or a Forget's
// mark.
type recentTokens struct {
	m       sync.Map // recentKey → *recentToken
	changes atomic.Int64
}

type recentKey struct{ user, platform string }

// recentToken is one account's entry. Entries are replaced, never
// changed, and compared by pointer: a read keeps what it read only if the
// entry it saw before reading is still there (sync.Map's
// CompareAndSwap), so a Forget during the read wins.
type recentToken struct {
	tok       Token
	until     time.Time
	forgotten bool // a Forget's mark: nothing to serve
}

// ReadRecent is EnsureFresh for the back end's reads (the token API and
// egress), which come in bursts for the same few users: a token this
// instance read less than RecentFor ago is served again without a
// database read or a decryption, as long as it stays valid for
// minValidity. Only a token EnsureFresh served as fully fresh is kept:
// never an error, and never one whose renewal failed (the next read
// tries again), and never one read while a Forget of the account ran. A
// kept token is returned with Refreshed false: this call renewed nothing.
func (r *Refresher) ReadRecent(ctx context.Context, userID, platform string, minValidity time.Duration, trigger string) (Token, error) {
	if tok, ok := r.Recent(userID, platform, minValidity); ok {
		return tok, nil
	}
	key := recentKey{userID, platform}
	now := r.now()
	seen, _ := r.recent.m.Load(key)
	tok, err := r.EnsureFresh(ctx, userID, platform, minValidity, trigger)
	if err != nil || tok.RenewalFailed {
		if seen != nil && !seen.(*recentToken).forgotten {
			r.recent.m.CompareAndDelete(key, seen)
		}
		return tok, err
	}
	kept := tok
	kept.Refreshed = false
	entry := &recentToken{tok: kept, until: now.Add(RecentFor)}
	// Kept only over what was there before the read: a Forget meanwhile
	// (or another read's entry) stays.
	if seen == nil {
		r.recent.m.LoadOrStore(key, entry)
	} else {
		r.recent.m.CompareAndSwap(key, seen, entry)
	}
	r.sweep(now)
	return tok, nil
}

// sweep drops stale entries now and then: what is kept is the active
// users, and the marks of recent Forgets.
func (r *Refresher) sweep(now time.Time) {
	if r.recent.changes.Add(1)%4096 != 0 {
		return
	}
	r.recent.m.Range(func(k, v any) bool {
		if !now.Before(v.(*recentToken).until) {
			r.recent.m.CompareAndDelete(k, v)
		}
		return true
	})
}

// Where a token read for the back end came from (BackEndRead.Source).
const (
	SourceSealed          = "credentials_encrypted"
	SourceLegacyPlaintext = "legacy_plaintext"
)

// BackEndRead is a token read for the app's back end through the token
// API: the token, and where it came from.
type BackEndRead struct {
	Token
	// Source is SourceSealed, or SourceLegacyPlaintext for an app row
	// credgate has not sealed yet.
	Source string
}

// BackEndReadBudget is a back-end read's budget (the token API's and
// egress's) when it has to go to the database: a renewal waits for the
// platform.
const BackEndReadBudget = 40 * time.Second

// ReadForBackEnd is the token API's read of userID's token on platform,
// valid for minValidity: this instance's recent read when it has one
// (no context is even made for it), else ReadRecent (the database, and a
// renewal first when the token is about to expire). With
// legacyPlaintext, an account credgate has not sealed yet is served from
// the app's plaintext column, but only while its expiry is known and
// ahead (VouchForAppToken).
func (r *Refresher) ReadForBackEnd(ctx context.Context, userID, platform string, minValidity time.Duration, legacyPlaintext bool) (BackEndRead, error) {
	if tok, ok := r.Recent(userID, platform, minValidity); ok {
		return BackEndRead{Token: tok, Source: SourceSealed}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, BackEndReadBudget)
	defer cancel()
	tok, err := r.ReadRecent(ctx, userID, platform, minValidity, "token_api")
	if !errors.Is(err, vault.ErrNotConnected) || !legacyPlaintext {
		return BackEndRead{Token: tok, Source: SourceSealed}, err
	}
	read := BackEndRead{Source: SourceLegacyPlaintext}
	var access secret.Value
	read.Account, access, err = r.Accounts.LegacyToken(ctx, r.DB, userID, platform)
	read.Credentials = vault.Credentials{AccessToken: access}
	if err == nil {
		err = VouchForAppToken(read.Account, time.Now())
	}
	return read, err
}

// Recent is ReadRecent's answer when it needs no database: the token
// kept for the account, if it was read less than RecentFor ago and stays
// valid for minValidity. A caller that sets up a budget for the database
// (a context with a timeout costs an allocation and a timer per call)
// asks this first, and does so only when it reports false.
func (r *Refresher) Recent(userID, platform string, minValidity time.Duration) (Token, bool) {
	v, ok := r.recent.m.Load(recentKey{userID, platform})
	if !ok {
		return Token{}, false
	}
	kept, now := v.(*recentToken), r.now()
	if !kept.forgotten && now.Before(kept.until) && (kept.tok.Account.ExpiresAt == nil || now.Add(minValidity).Before(*kept.tok.Account.ExpiresAt)) {
		return kept.tok, true
	}
	return Token{}, false
}

// Forget drops the token ReadRecent keeps for the user's account on
// platform, after a change this instance made to it (a connect, a
// disconnect, a renewal), so its own readers see the change at once. It
// leaves a mark for forgottenFor, so that a read already under way
// (which may have read the account before the change) does not keep
// what it read.
func (r *Refresher) Forget(userID, platform string) {
	now := r.now()
	r.recent.m.Store(recentKey{userID, platform}, &recentToken{forgotten: true, until: now.Add(forgottenFor)})
	r.sweep(now)
}
