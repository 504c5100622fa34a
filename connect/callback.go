package connect

import (
	"context"
	"errors"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// Callback is what the platform's redirect brought back for a flow
// credgate started.
type Callback struct {
	Provider *oauth.Provider
	// State is the state query parameter as it came.
	State string
	// Query is the whole callback query (code, or error and its
	// description).
	Query url.Values
	// Binding is the browser's binding cookie for the platform (zero
	// when it sent none).
	Binding secret.Value
	// SignedIn is the user the request carries, "" when it carries none:
	// a callback without a usable identity is not refused, the binding
	// already ties the flow to the browser that started it.
	SignedIn string
}

// Kind sorts a callback's result by how it is answered.
type Kind int

const (
	// Connected: the tokens are stored; the browser goes back to
	// ReturnTo with connected=<platform>.
	Connected Kind = iota
	// Failed: the flow ended without a connection (Code); the browser
	// goes back to ReturnTo with oauth_error=<Code>.
	Failed
	// Refused: the callback is not one this browser may finish (Code,
	// Message): answered 400, nothing exchanged.
	Refused
	// Unavailable: the state could not be read (Err); the answer is the
	// storage error's.
	Unavailable
)

// Result is how Finish ended.
type Result struct {
	Kind     Kind
	Code     string
	Message  string
	ReturnTo string
	// ClearBinding is set once the state matched this browser: the
	// binding cookie has done its work and is cleared.
	ClearBinding bool
	Err          error
}

// Finish completes a flow credgate started: consume the state (single
// use), check it belongs to this platform, browser and user, then
// exchange the code and store the result with its refresh job and audit
// row. Every ending but Unavailable and an unrecognised state is
// audited and told to Finished. ctx is the request's: its budget bounds
// the state's consume; nothing after the platform answers is cancelled
// with it.
func (f *Flows) Finish(ctx context.Context, cb Callback) Result {
	p := cb.Provider
	platform := p.Name()
	if !f.Keys.RecognizeState(cb.State) {
		// Missing, forged or random: not a state credgate issued. Answer
		// without touching the database, so junk requests cannot write.
		return Result{Kind: Refused, Code: "invalid_state", Message: "this sign-in link is unknown; start again"}
	}
	st, refused, err := f.consume(ctx, platform, cb)
	switch {
	case err != nil:
		return Result{Kind: Unavailable, Err: err}
	case refused != nil:
		return *refused
	}
	failed := func(code oauth.Code, userCaused bool) Result {
		f.finished(Outcome{Arm: flags.ArmNew, Platform: platform, UserID: st.UserID, Code: string(code), UserCaused: userCaused, Took: time.Since(st.CreatedAt)})
		f.Audit.Record(ctx, vault.Event{UserID: st.UserID, Platform: platform, Action: vault.ActionConnect,
			Status: vault.Failed, Flow: st.Flow, ErrorCode: string(code), Duration: time.Since(st.CreatedAt)})
		return Result{Kind: Failed, Code: string(code), ReturnTo: st.ReturnTo, ClearBinding: true}
	}
	if cbErr := oauth.CallbackError(platform, cb.Query); cbErr != nil {
		return failed(cbErr.Code, true)
	}
	tok, err := f.exchange(ctx, p, cb, st)
	if err != nil {
		f.logger().Info("oauth exchange failed", zap.String("platform", platform), errField(err))
		// A code the platform refused (unknown, used, malformed) is the
		// user's to send; the platform down or answering nonsense is not.
		code := oauth.CodeOf(err)
		return failed(code, code == oauth.CodeInvalidGrant || code == oauth.CodeInvalidRequest)
	}
	if err := f.store(ctx, p, st, tok); err != nil {
		f.logger().Error("storing credentials", zap.String("user_id", st.UserID), zap.String("platform", platform), errField(err))
		f.withdraw(ctx, p, st, tok)
		f.finished(Outcome{Arm: flags.ArmNew, Platform: platform, UserID: st.UserID, Code: telemetry.CodeStorageUnavailable, Took: time.Since(st.CreatedAt)})
		return Result{Kind: Failed, Code: telemetry.CodeStorageUnavailable, ReturnTo: st.ReturnTo, ClearBinding: true}
	}
	f.Renewals.Forget(st.UserID, platform) // the back end's next read takes the new token
	f.finished(Outcome{Arm: flags.ArmNew, Platform: platform, UserID: st.UserID, Took: time.Since(st.CreatedAt)})
	return Result{Kind: Connected, ReturnTo: st.ReturnTo, ClearBinding: true}
}

// consume takes the state (single use) within the request's DBTimeout
// and checks it against the callback: the platform, the browser's
// binding and the signed-in user. A refusal is audited with what the
// state row knew (none for an unknown state, which counts as the new
// flow's).
func (f *Flows) consume(ctx context.Context, platform string, cb Callback) (vault.ConsumedState, *Result, error) {
	ctx, cancel := context.WithTimeout(ctx, DBTimeout)
	defer cancel()
	refuse := func(code, message string, st vault.ConsumedState, reason string) (vault.ConsumedState, *Result, error) {
		flow := st.Flow
		if flow == "" {
			flow = string(flags.ArmNew)
		}
		f.Audit.Record(ctx, vault.Event{UserID: st.UserID, Platform: platform, Action: vault.ActionConnect,
			Status: vault.Failed, Flow: flow, ErrorCode: code, Details: map[string]any{"reason": reason}})
		return st, &Result{Kind: Refused, Code: code, Message: message}, nil
	}
	st, err := f.States.Consume(ctx, f.DB, secret.New(cb.State))
	switch {
	case errors.Is(err, vault.ErrStateNotFound):
		return refuse("invalid_state", "this sign-in link is unknown or was already used; start again", vault.ConsumedState{}, "unknown_or_used")
	case errors.Is(err, vault.ErrStateExpired):
		return refuse("invalid_state", "this sign-in link has expired; start again", st, "expired")
	case err != nil:
		return st, nil, err
	case st.Platform != platform:
		return refuse("state_mismatch", "this sign-in link belongs to another platform", st, "platform")
	case !st.MatchesBrowser(cb.Binding):
		return refuse("state_mismatch", "this sign-in was started in another browser", st, "browser")
	case cb.SignedIn != "" && cb.SignedIn != st.UserID:
		return refuse("state_mismatch", "this sign-in was started by another user", st, "user")
	}
	return st, nil, nil
}

// exchange redeems the code, with a budget of its own (providers may be
// slow) that a browser going away does not cancel: the platform may
// already have issued the tokens.
func (f *Flows) exchange(ctx context.Context, p *oauth.Provider, cb Callback, st vault.ConsumedState) (oauth.TokenSet, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return p.Complete(ctx, secret.New(cb.Query.Get("code")), st.Verifier, oauth.WithRedirectURL(st.RedirectURI))
}

// store keeps what the platform issued: the account row, its refresh job
// and its audit row, all or nothing, in one statement. The platform has
// issued tokens, so from here on the request's client cannot cancel
// anything (a browser that hangs up must not cost the user the
// connection), and a database that is restarting or cut off for a moment
// is retried (retryStore) before credgate gives up.
func (f *Flows) store(ctx context.Context, p *oauth.Provider, st vault.ConsumedState, tok oauth.TokenSet) error {
	platform := p.Name()
	ctx, span := f.tracer().Start(context.WithoutCancel(ctx), "credgate.vault.store", telemetry.SpanAttrs(platform, st.Flow)...)
	creds := vault.Credentials{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType,
		Expiry: tok.Expiry, IssuedAt: tok.IssuedAt}
	jobAt, _ := f.Renewals.ConnectedJobAt(p, creds)
	err := retryStore(ctx, func(ctx context.Context) error {
		_, err := f.Accounts.StoreConnect(ctx, f.DB, vault.Connection{
			UserID: st.UserID, Platform: platform, PlatformUserID: tok.PlatformUserID, Username: tok.Username,
			Credentials: creds, Scopes: tok.Scopes, ConnectedVia: vault.ViaCredgate, KnownID: st.AccountID,
		}, jobAt, func(id string) vault.Event {
			return vault.Event{UserID: st.UserID, Platform: platform, Action: vault.ActionConnect,
				Status: vault.Success, Flow: st.Flow, Duration: time.Since(st.CreatedAt),
				Details: map[string]any{"account_id": id, "scopes": len(tok.Scopes)}}
		})
		return err
	})
	code := ""
	if err != nil {
		code = telemetry.CodeStorageUnavailable
	}
	telemetry.End(span, code)
	return err
}

// connectStoreRetry bounds how long a connect's store is retried while
// the browser waits for its answer: long enough for a database restart or
// a brief cut, short enough for a person.
const connectStoreRetry = 20 * time.Second

// retryStore runs store, each attempt with its own DBTimeout budget,
// again while the database answers that it is down, restarting or timed
// out, for up to connectStoreRetry.
func retryStore(ctx context.Context, store func(ctx context.Context) error) error {
	deadline := time.Now().Add(connectStoreRetry)
	wait := 200 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, DBTimeout)
		err := store(actx)
		cancel()
		if err == nil || !dberr.Retryable(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(wait*2, 2*time.Second)
	}
}

// withdraw handles tokens the platform issued but credgate could not
// keep: it revokes them at the platform where that is possible (no live
// token is left that nobody holds), then audits the failed connect, in
// the background while the database does not answer (RecordEventually):
// a grant withdrawn with no record is what the audit log exists to
// prevent.
func (f *Flows) withdraw(ctx context.Context, p *oauth.Provider, st vault.ConsumedState, tok oauth.TokenSet) {
	platform := p.Name()
	revoked := false
	if p.CanRevoke() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := p.Revoke(rctx, tok)
		cancel()
		revoked = err == nil
		if err != nil {
			f.logger().Warn("could not revoke the tokens credgate failed to store", zap.String("user_id", st.UserID), zap.String("platform", platform), errField(err))
		}
	}
	f.Audit.RecordEventually(vault.Event{UserID: st.UserID, Platform: platform, Action: vault.ActionConnect,
		Status: vault.Failed, Flow: st.Flow, ErrorCode: telemetry.CodeStorageUnavailable, Duration: time.Since(st.CreatedAt),
		TraceID: vault.TraceID(ctx),
		Details: map[string]any{"stage": "store", "issued_token_revoked": revoked, "revocable": p.CanRevoke()}})
}
