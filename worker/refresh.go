package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// Errors EnsureFresh returns; test with errors.Is.
var (
	// ErrNeedsReauth: only the user can renew this account's token.
	ErrNeedsReauth = errors.New("the account needs the user to reconnect")
	// ErrUnknownPlatform: no provider is configured for the platform.
	ErrUnknownPlatform = errors.New("no provider is configured for this platform")
	// ErrRefusedFresh: the platform refused a token issued less than
	// refusedFreshWindow ago. Renewing again would not help (the refusal
	// is about something else) and would rotate the grant at every call.
	ErrRefusedFresh = errors.New("the platform refused a token it issued moments ago")
	// ErrAppRenews: the app's own token has expired, and the app still
	// renews its tokens (app-refresh on), so credgate must not.
	ErrAppRenews = errors.New("the app's token has expired and the app renews this account's tokens itself")
	// ErrExpiryUnknown: the token is the app's and nothing says when it
	// expires (no app expiry column is set, and credgate may not or
	// cannot renew it to learn): it cannot be vouched for.
	ErrExpiryUnknown = errors.New("the app's token has no known expiry")
)

// Refresher renews tokens under their account's row lock. The workers,
// the token API and the egress proxy all go through it, so that one
// token is never renewed twice at once: the second caller waits for the
// lock, then finds the token fresh. That matters beyond cost: Twitter
// rotates refresh tokens and revokes the whole grant when an old one
// comes back.
type Refresher struct {
	DB        vault.DB
	Accounts  *vault.Accounts
	Providers map[string]*oauth.Provider
	Policy    Policy
	// Now is credgate's clock (the one token expiries are computed
	// with); default time.Now.
	Now    func() time.Time
	Logger *zap.Logger
	// ProviderTimeout bounds one renewal at the platform. Default 30s.
	ProviderTimeout time.Duration
	// Observe, if set, sees the outcome of every renewal attempt that
	// reached the platform: "success", "failure" or "needs_reauth".
	Observe func(platform, outcome string)
	// DecryptFailed, if set, sees each account whose stored credentials
	// do not open with the configured keys when a renewal reads them.
	DecryptFailed func(platform string)
	// Tracer, if set, traces each renewal (credgate.refresh) and loop run.
	Tracer trace.Tracer
	// StoreRetry is how long a renewal the platform answered is retried
	// when storing it fails (pending.go). Default 5 minutes.
	StoreRetry time.Duration

	flight  singleflight.Group
	pending sync.WaitGroup // stores being retried
	// local holds, per account id, a channel closed when the renewal of
	// this process that holds the account's lease ends: callers that
	// find the lease taken by it wait for it (whileLeased).
	local sync.Map
	// recent is what ReadRecent keeps (recent.go).
	recent recentTokens
}

func (r *Refresher) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

func (r *Refresher) tracer() trace.Tracer {
	if r.Tracer == nil {
		return noop.NewTracerProvider().Tracer(telemetry.ScopeName)
	}
	return r.Tracer
}

func (r *Refresher) logger() *zap.Logger {
	if r.Logger == nil {
		return zap.NewNop()
	}
	return r.Logger
}

// Token is an account with credentials the caller may use.
type Token struct {
	Account     vault.Account
	Credentials vault.Credentials
	// Refreshed is true when this call renewed the token.
	Refreshed bool
	// RenewalFailed is true when the token expires within the asked
	// validity and renewing it failed for a reason that may pass; the
	// token is still valid, just not for as long as asked.
	RenewalFailed bool
}

// EnsureFresh returns the user's credentials for platform, renewed first
// when they expire within minValidity. trigger names the caller in the
// audit log ("token_api", "egress").
func (r *Refresher) EnsureFresh(ctx context.Context, userID, platform string, minValidity time.Duration, trigger string) (Token, error) {
	p, ok := r.Providers[platform]
	if !ok {
		return Token{}, ErrUnknownPlatform
	}
	a, c, err := r.Accounts.Get(ctx, r.DB, userID, platform)
	if err != nil {
		return Token{}, err
	}
	settings, err := r.Accounts.Settings(ctx)
	if err != nil {
		return Token{}, err
	}
	if done, tok, err := r.settled(p, a, c, minValidity, settings); done {
		return tok, err
	}
	// Callers in this process that need the same account renewed wait for
	// one renewal instead of each holding a pooled connection while they
	// queue on the row lock.
	// The shared renewal does not end when the first caller goes away:
	// the others still want it, and the platform call is bounded anyway.
	return r.renewShared(ctx, a.ID, p, a.ID, minValidity, trigger, secret.Value{})
}

// renewShared runs renewLocked once for all the callers in this process
// that ask under the same key at the same time.
func (r *Refresher) renewShared(ctx context.Context, key string, p *oauth.Provider, id string, minValidity time.Duration, trigger string, rejected secret.Value) (Token, error) {
	v, err, _ := r.flight.Do(key, func() (any, error) {
		return r.renewLocked(context.WithoutCancel(ctx), p, id, minValidity, trigger, rejected)
	})
	if err != nil {
		return Token{}, err
	}
	return v.(Token), nil
}

// refusedFreshWindow: a token refused within this long of being issued is
// not renewed again (see ErrRefusedFresh).
const refusedFreshWindow = time.Minute

// RenewRejected renews the user's token after the platform refused it (a
// 401 to an API call made with it), however long it should still have
// been valid, unless it was replaced meanwhile: under the account's row
// lock it renews only while the stored access token is still the
// rejected one, so fifty callers refused at once cause one renewal, and a
// rotated refresh token is never used twice.
func (r *Refresher) RenewRejected(ctx context.Context, userID, platform string, rejected secret.Value, trigger string) (Token, error) {
	p, ok := r.Providers[platform]
	if !ok {
		return Token{}, ErrUnknownPlatform
	}
	a, _, err := r.Accounts.Get(ctx, r.DB, userID, platform)
	if err != nil {
		return Token{}, err
	}
	// Callers refused with the same token share one renewal; one refused
	// with another token (a newer one, dead too) gets its own.
	sum := sha256.Sum256([]byte(rejected.Reveal()))
	return r.renewShared(ctx, a.ID+"/rejected/"+hex.EncodeToString(sum[:8]), p, a.ID, 0, trigger, rejected)
}

// renewLocked renews account id under its row lock unless whoever held
// the lock before renewed it already. With a rejected token it renews
// whenever the stored token is still that one.
func (r *Refresher) renewLocked(ctx context.Context, p *oauth.Provider, id string, minValidity time.Duration, trigger string, rejected secret.Value) (Token, error) {
	rn, taken, left, err := r.takeLease(ctx, id)
	if err != nil {
		return Token{}, err
	}
	if !taken {
		return r.whileLeased(ctx, p, id, left, minValidity, rejected)
	}
	var out Token
	// failure is reported after the commit: the audit row and the status
	// of a failed renewal must stay.
	var failure, attempt error
	attempted := false
	ctx, end := r.refreshSpan(ctx, p.Name(), trigger)
	var renewed vault.Account // the account locked, whose kept token this replaces
	defer func() {
		if renewed.UserID != "" {
			r.Forget(renewed.UserID, p.Name())
		}
	}()
	err = r.inRenewalTx(ctx, func(txCtx context.Context, tx pgx.Tx) error {
		locked, err := r.Accounts.LockForRenewal(txCtx, tx, id)
		if err != nil {
			return err
		}
		a, c := locked.Account, locked.Credentials
		renewed = a
		// Whoever held the lock before us may have renewed it already.
		switch {
		case !rejected.IsZero() && c.AccessToken.Reveal() != rejected.Reveal():
			out = Token{Account: a, Credentials: c}
			return nil
		case !rejected.IsZero() && (a.Status == vault.StatusNeedsReauth || a.Status == vault.StatusRevoked):
			failure = ErrNeedsReauth
			return nil
		case !rejected.IsZero() && r.now().Sub(issuedAt(a, c)) < refusedFreshWindow:
			failure = ErrRefusedFresh
			return nil
		case rejected.IsZero():
			if done, tok, err := r.settled(p, a, c, minValidity, locked.Settings); done {
				out, failure = tok, err
				return nil
			}
		}
		na, nc, rerr := r.renew(ctx, txCtx, tx, p, locked, trigger, 0, func(b *pgx.Batch, na vault.Account, nc vault.Credentials) {
			if at, ok := r.nextLook(p, na, nc); ok {
				vault.QueueScheduleRenewal(b, na.ID, na.Version, at)
			}
		}, rn)
		attempted, attempt = true, rerr
		switch outcomeOf(rerr) {
		case renewalDone:
			out = Token{Account: na, Credentials: nc, Refreshed: true}
			return nil
		case renewalAborted:
			return rerr
		case renewalNeedsUser:
			if err := r.markNeedsReauth(txCtx, tx, a, rerr, rn); err != nil {
				return err
			}
			if err := vault.CancelRenewals(txCtx, tx, a.ID); err != nil {
				return err
			}
			failure = ErrNeedsReauth
			return nil
		}
		if err := r.auditFailure(txCtx, tx, a, rerr, trigger, nil); err != nil {
			return err
		}
		// A refused token is no fallback, however long it should have
		// lasted.
		if rejected.IsZero() && r.now().Before(expiryOf(a, c)) {
			out = Token{Account: a, Credentials: c, RenewalFailed: true}
			return nil
		}
		failure = rerr
		return nil
	})
	end(attempted, attempt, err)
	r.settle(rn, err)
	if err != nil {
		if ans := rn.answered; ans != nil {
			// The platform's token works whether or not it is stored
			// yet (storeAnswer keeps at it): the caller gets it.
			return Token{Account: swappedAccount(ans.locked.Account, ans.creds), Credentials: ans.creds, Refreshed: true}, nil
		}
		return Token{}, err
	}
	return out, failure
}

// whileLeased answers a caller whose renewal found another one in flight.
// One of this process (a worker's, or one asked for another reason: a
// read near expiry, a token the platform refused) is waited for, so that
// the caller shares it as if it had joined it. Then, or for one of
// another process at once: the stored token while it still works, else
// ErrRenewalPending.
func (r *Refresher) whileLeased(ctx context.Context, p *oauth.Provider, id string, left, minValidity time.Duration, rejected secret.Value) (Token, error) {
	r.awaitLocal(id)
	a, c, err := r.Accounts.GetByID(ctx, r.DB, id)
	if err != nil {
		return Token{}, err
	}
	if !rejected.IsZero() && c.AccessToken.Reveal() != rejected.Reveal() {
		return Token{Account: a, Credentials: c}, nil // replaced meanwhile
	}
	if now := r.now(); rejected.IsZero() && now.Before(expiryOf(a, c)) {
		need, _ := r.Policy.NeedsRenewal(RenewalOf(p), a, c, now, minValidity)
		return Token{Account: a, Credentials: c, RenewalFailed: need}, nil
	}
	r.logger().Debug("renewal in flight elsewhere; the stored token has expired", zap.String("account_id", id), zap.Duration("lease_left", left))
	return Token{}, ErrRenewalPending
}

// refreshSpan starts the credgate.refresh span of one renewal; end
// closes it once the transaction is over, and reports the attempt's
// outcome (only then: a renewal is a success once committed).
func (r *Refresher) refreshSpan(ctx context.Context, platform, trigger string) (context.Context, func(attempted bool, attempt, txErr error)) {
	ctx, span := r.tracer().Start(ctx, "credgate.refresh", trace.WithAttributes(
		telemetry.AttrPlatform.String(platform), attribute.String("credgate.trigger", trigger)))
	return ctx, func(attempted bool, attempt, txErr error) {
		code := ""
		switch {
		case txErr != nil:
			code = "storage_unavailable"
		case attempt != nil:
			code = errorCode(attempt)
		}
		telemetry.End(span, code)
		if attempted && txErr == nil {
			r.observe(platform, attempt)
		}
	}
}

// inRenewalTx runs fn in a transaction whose statements the caller cannot
// cancel, only a deadline can (the context keeps ctx's span, so audit
// rows written in it carry its trace id): once the platform has answered, its new
// token must be committed even if the request that asked for it went
// away or the instance is stopping, or a rotated refresh token is lost.
// The platform call itself stays on the caller's ctx.
func (r *Refresher) inRenewalTx(ctx context.Context, fn func(txCtx context.Context, tx pgx.Tx) error) error {
	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.providerTimeout()+renewalWriteBudget)
	defer cancel()
	return vault.InTx(txCtx, r.DB, func(tx pgx.Tx) error { return fn(txCtx, tx) })
}

// renewalWriteBudget bounds a renewal's database work beyond the platform
// call: waiting for the row lock, reading, writing, committing.
const renewalWriteBudget = 15 * time.Second

func (r *Refresher) providerTimeout() time.Duration {
	if r.ProviderTimeout <= 0 {
		return 30 * time.Second
	}
	return r.ProviderTimeout
}

// observe reports a renewal attempt's outcome to Observe. An attempt the
// database aborted says nothing of the platform: not reported.
func (r *Refresher) observe(platform string, err error) {
	if r.Observe == nil {
		return
	}
	switch outcomeOf(err) {
	case renewalDone:
		r.Observe(platform, "success")
	case renewalNeedsUser:
		r.Observe(platform, "needs_reauth")
	case renewalFailed:
		r.Observe(platform, "failure")
	}
}

// renewalOutcome sorts what a renewal returned, one way for the
// on-demand renewals (renewLocked), the workers' jobs (renewJob) and the
// metrics (observe).
type renewalOutcome int

const (
	// renewalDone: the token is renewed and stored.
	renewalDone renewalOutcome = iota
	// renewalAborted: the database failed, not the platform; the
	// transaction is aborted and rolls back (fromPlatform).
	renewalAborted
	// renewalNeedsUser: the platform refused the grant for good
	// (invalid_grant, needs_reauth): only the user can renew it.
	renewalNeedsUser
	// renewalFailed: the platform failed in a way that may pass.
	renewalFailed
)

// outcomeOf sorts a renewal's error (nil for a success).
func outcomeOf(rerr error) renewalOutcome {
	switch {
	case rerr == nil:
		return renewalDone
	case !fromPlatform(rerr):
		return renewalAborted
	case needsUser(rerr):
		return renewalNeedsUser
	}
	return renewalFailed
}

// fromPlatform reports whether err came from the platform (so the
// transaction is intact and the failure can be recorded in it), rather
// than from the database (the transaction is aborted: give up and let it
// roll back).
func fromPlatform(err error) bool {
	var e *oauth.Error
	return errors.As(err, &e)
}

// auditFailure records a renewal that failed for a reason that may pass.
func (r *Refresher) auditFailure(ctx context.Context, tx pgx.Tx, a vault.Account, cause error, trigger string, extra map[string]any) error {
	details := map[string]any{"account_id": a.ID, "trigger": trigger}
	for k, v := range extra {
		details[k] = v
	}
	return vault.AppendAudit(ctx, tx, vault.Event{UserID: a.UserID, Platform: a.Platform, Action: vault.ActionRefresh,
		Status: vault.Failed, ErrorCode: errorCode(cause), Details: details})
}

// settled decides EnsureFresh without a renewal when it can: done is
// false when the token must be renewed.
func (r *Refresher) settled(p *oauth.Provider, a vault.Account, c vault.Credentials, minValidity time.Duration, s vault.Settings) (done bool, tok Token, err error) {
	if a.Status == vault.StatusNeedsReauth || a.Status == vault.StatusRevoked {
		return true, Token{}, ErrNeedsReauth
	}
	now := r.now()
	if a.AppOwned {
		// The app's token: credgate serves it only while it can say how
		// long it lasts, and renews it only once the app has stopped
		// renewing it (two renewers of one X grant lose it).
		expiry := expiryOf(a, c)
		switch {
		case !s.AppRefreshOff && expiry.IsZero():
			return true, Token{}, ErrExpiryUnknown
		case !s.AppRefreshOff && now.Before(expiry):
			return true, Token{Account: a, Credentials: c}, nil
		case !s.AppRefreshOff:
			return true, Token{}, ErrAppRenews
		case expiry.IsZero() && a.LastRefreshedAt == nil && RenewalOf(p).canRenew(c):
			// Renewing learns the expiry (once: a renewal sets
			// last_refreshed_at).
			return false, Token{}, nil
		case expiry.IsZero() && a.LastRefreshedAt == nil:
			return true, Token{}, ErrExpiryUnknown
		}
	}
	need, can := r.Policy.NeedsRenewal(RenewalOf(p), a, c, now, minValidity)
	switch {
	case !need:
		return true, Token{Account: a, Credentials: c}, nil
	case can:
		return false, Token{}, nil
	case now.Before(expiryOf(a, c)):
		// Cannot be renewed, but still works for a while.
		return true, Token{Account: a, Credentials: c}, nil
	}
	return true, Token{}, ErrNeedsReauth
}

// renew calls the platform on ctx and stores the new token set with its
// audit row on txCtx, on the row the caller locked in tx. What next
// queues (the account's next job) goes in the same round trip: a
// renewal's writes cost one trip to the database, not four. An error
// that is not an *oauth.Error comes from the database and has aborted
// tx.
func (r *Refresher) renew(ctx, txCtx context.Context, tx pgx.Tx, p *oauth.Provider, locked vault.Renewable,
	trigger string, attempt int, next func(b *pgx.Batch, na vault.Account, nc vault.Credentials), rn *renewal) (vault.Account, vault.Credentials, error) {
	a, c := locked.Account, locked.Credentials
	pctx, cancel := context.WithTimeout(ctx, r.providerTimeout())
	defer cancel()
	start := time.Now()
	out, err := p.Refresh(pctx, oauth.TokenSet{
		AccessToken: c.AccessToken, RefreshToken: c.RefreshToken, TokenType: c.TokenType, Expiry: expiryOf(a, c),
		IssuedAt: c.IssuedAt, Scopes: a.Scopes, PlatformUserID: a.PlatformUserID, Username: a.Username,
	})
	if err != nil {
		if !fromPlatform(err) {
			// A cancelled or timed-out call: the platform may or may not
			// have answered; to the caller it is a platform failure.
			err = &oauth.Error{Code: oauth.CodeProviderUnavailable, Op: "refresh", Platform: p.Name(), Retryable: true,
				Description: "the call did not complete"}
		}
		// The audit row for a failure is the caller's: it knows whether
		// the account now needs the user or the job will retry.
		return a, c, err
	}
	nc := vault.Credentials{AccessToken: out.AccessToken, RefreshToken: out.RefreshToken, TokenType: out.TokenType,
		Expiry: out.Expiry, IssuedAt: out.IssuedAt}
	if nc.RefreshToken.IsZero() && p.Renewal() == oauth.RenewWithRefreshToken {
		// The platform kept the refresh token (RFC 6749 §6).
		nc.RefreshToken = c.RefreshToken
	}
	// From here on the answer must be stored, this time or by
	// storeAnswer (pending.go).
	rn.answered = &answer{p: p, locked: locked, creds: nc, scopes: out.Scopes, trigger: trigger, attempt: attempt, started: start, next: next}
	details := map[string]any{"account_id": a.ID, "trigger": trigger}
	if attempt > 0 {
		details["attempt"] = attempt
	}
	b := &pgx.Batch{}
	var na vault.Account
	err = r.Accounts.QueueCompareAndSwapAudited(b, a, a.Version,
		refreshedFrom(locked, nc, out.Scopes),
		vault.Event{UserID: a.UserID, Platform: a.Platform, Action: vault.ActionRefresh, Status: vault.Success,
			Duration: time.Since(start), Details: details, TraceID: vault.TraceID(ctx)}, &na)
	if err != nil {
		return a, c, err
	}
	if next != nil {
		next(b, swappedAccount(a, nc), nc)
	}
	rn.lease.QueueRelease(b)
	if err := tx.SendBatch(txCtx, b).Close(); err != nil && !errors.Is(err, vault.ErrLeaseLost) {
		return a, c, fmt.Errorf("storing renewed token: %w", err)
	}
	return na, nc, nil
}

// VouchForAppToken checks a token the app wrote that credgate serves as
// it is (the token API's serve_legacy_plaintext): only while its expiry
// is known and ahead.
func VouchForAppToken(a vault.Account, now time.Time) error {
	switch {
	case a.ExpiresAt == nil:
		return ErrExpiryUnknown
	case !now.Before(*a.ExpiresAt):
		return ErrAppRenews
	}
	return nil
}

// refreshedFrom is what a renewal of locked with the new token set nc
// writes: the app's columns too when it reads them, and the row back to
// the app's when the renewed token was the app's newer one.
func refreshedFrom(locked vault.Renewable, nc vault.Credentials, scopes []string) vault.Refreshed {
	r := vault.Refreshed{Credentials: nc, Scopes: scopes, WritePlaintext: locked.AppReadsPlaintext, Adopted: locked.Account.AppNewer,
		Columns: locked.Settings.Columns}
	if r.WritePlaintext {
		r.ExpiryColumn = locked.Settings.AppExpiryColumn
	}
	return r
}

// needsUser reports whether a renewal error means only the user can
// renew: the grant is gone.
func needsUser(err error) bool {
	var e *oauth.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == oauth.CodeInvalidGrant || e.Code == oauth.CodeNeedsReauth
}

// errorCode is the stable code for an audit row or a job's last_error.
func errorCode(err error) string { return string(oauth.CodeOf(err)) }

// markNeedsReauth records that only the user can renew the account.
func (r *Refresher) markNeedsReauth(ctx context.Context, tx pgx.Tx, a vault.Account, cause error, rn *renewal) error {
	code := string(oauth.CodeNeedsReauth)
	if cause != nil {
		code = errorCode(cause)
	}
	if err := r.Accounts.MarkNeedsReauth(ctx, tx, a, code); err != nil {
		return err
	}
	details := map[string]any{"account_id": a.ID, "needs_reauth": true}
	if rn != nil && rn.tookOver {
		// The platform's refusal is most likely the echo of an earlier
		// renewal whose answer died with its process: say so.
		details["previous_renewal_unfinished"] = true
	}
	return vault.AppendAudit(ctx, tx, vault.Event{UserID: a.UserID, Platform: a.Platform, Action: vault.ActionRefresh,
		Status: vault.Failed, ErrorCode: code, Details: details})
}

// Schedule queues the next look at account a, whose token c was just
// written (a connect, a renewal), in the caller's transaction.
func (r *Refresher) Schedule(ctx context.Context, tx vault.DB, p *oauth.Provider, a vault.Account, c vault.Credentials) error {
	at, ok := r.nextLook(p, a, c)
	if !ok {
		return nil
	}
	_, err := vault.ScheduleRenewal(ctx, tx, a.ID, a.Version, at)
	return err
}

// ConnectedJobAt is when the refresh job of an account just connected
// with credentials c (status connected, never refreshed) is due: the job
// Schedule would give it. False: it needs none.
func (r *Refresher) ConnectedJobAt(p *oauth.Provider, c vault.Credentials) (time.Time, bool) {
	a := vault.Account{Status: vault.StatusConnected, UpdatedAt: r.now()}
	if !c.Expiry.IsZero() {
		x := c.Expiry
		a.ExpiresAt = &x
	}
	return r.nextLook(p, a, c)
}

// nextLook is when the account's token needs looking at again; false when
// never.
func (r *Refresher) nextLook(p *oauth.Provider, a vault.Account, c vault.Credentials) (time.Time, bool) {
	plan := r.Policy.Next(RenewalOf(p), a, c, r.now())
	if plan.Step == StepIdle {
		return time.Time{}, false
	}
	if plan.At.IsZero() {
		return r.now(), true
	}
	return plan.At, true
}
