// Package worker is credgate's background work and on-demand refresh:
// the refresh scheduler and workers, expired-state cleanup and the daily
// audit roll-up (one file per loop), and the Refresher that the workers,
// the token API and the egress proxy share.
//
// Every loop is safe with any number of credgate replicas on one
// PostgreSQL, and PostgreSQL is the only coordinator: refresh jobs are
// leased with FOR UPDATE SKIP LOCKED, a token is renewed only under its
// account's row lock, and the periodic loops run as singletons under
// pg_try_advisory_xact_lock. Nothing here imports Caddy.
package worker

import (
	"time"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
)

// Policy decides when a token is renewed.
type Policy struct {
	// Ahead is how long before expiry a long-lived token (LinkedIn,
	// Facebook, Instagram: 60 days) is renewed. Default 72h, the
	// guide's "refresh tokens expiring in 3 days".
	Ahead time.Duration
	// AheadShort is the same for short-lived tokens, those whose whole
	// lifetime is no longer than Ahead (Twitter/X: 2 hours). Default 15m.
	AheadShort time.Duration
}

// The background's defaults, in one place: Policy's, Workers' and
// Loops', which the credgate app's options default to as well.
const (
	DefaultAhead           = 72 * time.Hour
	DefaultAheadShort      = 15 * time.Minute
	DefaultWorkers         = 4
	DefaultLease           = 2 * time.Minute
	DefaultCleanupInterval = 5 * time.Minute
)

func (p Policy) withDefaults() Policy {
	if p.Ahead <= 0 {
		p.Ahead = DefaultAhead
	}
	if p.AheadShort <= 0 {
		p.AheadShort = DefaultAheadShort
	}
	return p
}

// Step is what to do with an account's token now.
type Step int

// The steps.
const (
	// StepWait: nothing until Plan.At.
	StepWait Step = iota
	// StepRefresh: renew the token now.
	StepRefresh
	// StepMarkExpiring: the token cannot be renewed without the user and
	// nears expiry; look again at Plan.At (the expiry).
	StepMarkExpiring
	// StepNeedsReauth: the token is dead and only the user can renew it.
	StepNeedsReauth
	// StepIdle: nothing will ever come due (the expiry is unknown and
	// there is no way to learn it): no job.
	StepIdle
)

func (s Step) String() string {
	return [...]string{"wait", "refresh", "mark_expiring", "needs_reauth", "idle"}[s]
}

// Plan is the decision for one token.
type Plan struct {
	Step Step
	// At is when to look again (StepWait, StepMarkExpiring).
	At time.Time
}

// Renewal is what Plan needs to know about a platform.
type Renewal struct {
	How    oauth.Renewal
	MinAge time.Duration
}

// RenewalOf describes p's renewal.
func RenewalOf(p *oauth.Provider) Renewal {
	return Renewal{How: p.Renewal(), MinAge: p.MinRefreshAge()}
}

// canRenew reports whether the platform can renew this token set without
// the user at all.
func (r Renewal) canRenew(c vault.Credentials) bool {
	switch r.How {
	case oauth.RenewWithRefreshToken:
		return !c.RefreshToken.IsZero()
	case oauth.RenewAccessToken:
		return true
	}
	return false
}

// issuedAt is when the token was issued: recorded in the blob since this
// release; for older and legacy rows, the last refresh or the last write
// of the row, which is no earlier than the token.
func issuedAt(a vault.Account, c vault.Credentials) time.Time {
	switch {
	case !c.IssuedAt.IsZero():
		return c.IssuedAt
	case a.LastRefreshedAt != nil:
		return *a.LastRefreshedAt
	}
	return a.UpdatedAt
}

func expiryOf(a vault.Account, c vault.Credentials) time.Time {
	if c.Expiry.IsZero() && a.ExpiresAt != nil {
		return *a.ExpiresAt
	}
	return c.Expiry
}

// Next decides what to do with account a's token c at now. It never asks
// for a refresh of a token in the first half of its life, so a platform
// that hands out short tokens cannot drive it into a refresh loop: each
// token is renewed in the background at most once.
func (p Policy) Next(r Renewal, a vault.Account, c vault.Credentials, now time.Time) Plan {
	p = p.withDefaults()
	issued, expiry := issuedAt(a, c), expiryOf(a, c)
	renewable := r.canRenew(c)
	if expiry.IsZero() {
		// Legacy rows carry no expiry. Renew once to learn it; never
		// again while it stays unknown.
		if !renewable || a.LastRefreshedAt != nil {
			return Plan{Step: StepIdle}
		}
		if at := issued.Add(r.MinAge); now.Before(at) {
			return Plan{Step: StepWait, At: at}
		}
		return Plan{Step: StepRefresh}
	}
	if !now.Before(expiry) {
		// A refresh token outlives its access token; anything else that
		// expired needs the user.
		if r.How == oauth.RenewWithRefreshToken && renewable {
			return Plan{Step: StepRefresh}
		}
		return Plan{Step: StepNeedsReauth}
	}
	lifetime := expiry.Sub(issued)
	window := p.Ahead
	if lifetime <= p.Ahead {
		window = p.AheadShort
	}
	if lifetime > 0 && window > lifetime/2 {
		window = lifetime / 2
	}
	due := expiry.Add(-window)
	if !renewable {
		switch {
		case now.Before(due):
			return Plan{Step: StepWait, At: due}
		case a.Status == vault.StatusExpiring:
			return Plan{Step: StepWait, At: expiry}
		}
		return Plan{Step: StepMarkExpiring, At: expiry}
	}
	if oldEnough := issued.Add(r.MinAge); oldEnough.After(due) {
		due = oldEnough
	}
	if !due.Before(expiry) {
		// Too young to renew before it dies (Instagram's 24 h).
		return Plan{Step: StepWait, At: expiry}
	}
	if now.Before(due) {
		return Plan{Step: StepWait, At: due}
	}
	return Plan{Step: StepRefresh}
}

// NeedsRenewal reports whether a token the app asked for must be renewed
// first so that it stays valid for minValidity, and whether it can be.
//
// As in Next, a token in the first half of its life is never renewed:
// minValidity counts for at most half the token's lifetime. A
// minValidity longer than the platform's tokens live (3h against X's 2
// hours) would otherwise renew at every read, each renewal's token no
// better than the last, and rotate X's refresh token each time.
func (p Policy) NeedsRenewal(r Renewal, a vault.Account, c vault.Credentials, now time.Time, minValidity time.Duration) (need, can bool) {
	expiry := expiryOf(a, c)
	if lifetime := expiry.Sub(issuedAt(a, c)); lifetime > 0 {
		minValidity = min(minValidity, lifetime/2)
	}
	if expiry.IsZero() || expiry.Sub(now) >= minValidity {
		return false, false
	}
	can = r.canRenew(c)
	if can && r.How == oauth.RenewAccessToken {
		can = now.Before(expiry) && !now.Before(issuedAt(a, c).Add(r.MinAge))
	}
	return true, can
}
