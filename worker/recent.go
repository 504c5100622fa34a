package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// RecentFor is how long ReadRecent serves a token again without reading
// the database: a disconnect or a renewal by another replica, or a token
// the app writes on its own, is seen within this long. A change this
// instance makes or sees pass (a reconnect through the app's callback)
// is seen at once (Forget, and every renewal here forgets what it
// replaces). A token the platform refuses meanwhile is renewed through
// RenewRejected anyway.
const RecentFor = time.Second

// recentTokens is what ReadRecent remembers: per user and platform, the
// token read last and until when it may be served again.
type recentTokens struct {
	m      sync.Map // recentKey → recentToken
	stores atomic.Int64
}

type recentKey struct{ user, platform string }

type recentToken struct {
	tok   Token
	until time.Time
}

// ReadRecent is EnsureFresh for the back end's reads (the token API and
// egress), which come in bursts for the same few users: a token this
// instance read less than RecentFor ago is served again without a
// database read or a decryption, as long as it stays valid for
// minValidity. Only a token EnsureFresh served as fully fresh is kept:
// never an error, and never one whose renewal failed (the next read
// tries again). A kept token is returned with Refreshed false: this
// call renewed nothing.
func (r *Refresher) ReadRecent(ctx context.Context, userID, platform string, minValidity time.Duration, trigger string) (Token, error) {
	if tok, ok := r.Recent(userID, platform, minValidity); ok {
		return tok, nil
	}
	key := recentKey{userID, platform}
	now := r.now()
	tok, err := r.EnsureFresh(ctx, userID, platform, minValidity, trigger)
	if err != nil || tok.RenewalFailed {
		r.recent.m.Delete(key)
		return tok, err
	}
	kept := tok
	kept.Refreshed = false
	r.recent.m.Store(key, recentToken{tok: kept, until: now.Add(RecentFor)})
	// Drop stale entries now and then: what is kept is the active users.
	if r.recent.stores.Add(1)%4096 == 0 {
		r.recent.m.Range(func(k, v any) bool {
			if !now.Before(v.(recentToken).until) {
				r.recent.m.Delete(k)
			}
			return true
		})
	}
	return tok, nil
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
	kept, now := v.(recentToken), r.now()
	if now.Before(kept.until) && (kept.tok.Account.ExpiresAt == nil || now.Add(minValidity).Before(*kept.tok.Account.ExpiresAt)) {
		return kept.tok, true
	}
	return Token{}, false
}

// Forget drops the token ReadRecent keeps for the user's account on
// platform, after a change this instance made to it (a connect, a
// disconnect, a renewal), so its own readers see the change at once.
func (r *Refresher) Forget(userID, platform string) {
	r.recent.m.Delete(recentKey{userID, platform})
}
