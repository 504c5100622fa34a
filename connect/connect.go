// Package connect runs the steps of the connections credgate finishes
// itself, with no HTTP server and no Caddy: a flow's start (the
// single-use state and its audit row), its callback (consume the state,
// check it belongs to this platform, browser and user, exchange the code,
// store the tokens with their refresh job and audit row, and withdraw
// tokens it could not keep), the counting of the legacy arm's flows, a
// disconnect (revoke at the platform, then wipe), and what a user's
// health check reports of their accounts. caddymodule turns requests
// into these calls and their results into HTTP answers.
package connect

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// Flows holds what the connect steps share. Every field but Tracer,
// Logger, Finished and DecryptFailed is required.
type Flows struct {
	DB       vault.DB
	Keys     *vault.Keyring
	States   *vault.States
	Accounts *vault.Accounts
	Renewals Renewals
	Audit    *Auditor
	Tracer   trace.Tracer
	Logger   *zap.Logger

	// Finished hears how every flow ended, on both arms: for the rollout
	// guard and the metrics. The audit log is written here.
	Finished func(Outcome)
	// DecryptFailed hears of credentials that no longer open, met during
	// a disconnect or a health check (telemetry.ViaDisconnect,
	// ViaHealthCheck), for the health metric.
	DecryptFailed func(during string)
}

// Renewals is what the connect steps ask of the background renewals
// (worker.Refresher): when a new account's first renewal is due, and to
// drop what this instance remembers of an account that changed, so the
// back end's next read takes the new token.
type Renewals interface {
	ConnectedJobAt(p *oauth.Provider, c vault.Credentials) (time.Time, bool)
	Forget(userID, platform string)
}

// Outcome is how one flow ended.
type Outcome struct {
	Arm      flags.Arm
	Platform string
	UserID   string
	// Code is "" for a success, else why it failed (oauth.Code, or a
	// telemetry code such as storage_unavailable).
	Code string
	// UserCaused marks a failure the user could cause on purpose (an
	// error= on the callback, a code the platform refused): the guard
	// counts those once per user.
	UserCaused bool
	Took       time.Duration
}

// Started is a begun flow: where to send the browser, and the binding
// its cookie must carry back to the callback.
type Started struct {
	URL     string
	Binding secret.Value
}

// Begin starts a flow on p for userID: a state credgate can recognise
// without the database (Keyring.IssueState), PKCE, and the state row with
// its audit row in one statement (one round trip; both or neither). The
// browser returns to returnTo when the flow ends; the state lives for ttl.
func (f *Flows) Begin(ctx context.Context, p *oauth.Provider, userID, returnTo string, ttl time.Duration) (Started, error) {
	flow, err := p.Begin(oauth.WithState(f.Keys.IssueState()))
	if err != nil {
		return Started{}, fmt.Errorf("starting the flow: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, DBTimeout)
	defer cancel()
	platform := p.Name()
	arm := string(flags.ArmNew)
	err = f.States.CreateAudited(ctx, f.DB, vault.NewState{
		State: flow.State, UserID: userID, Platform: platform, Flow: arm, Verifier: flow.Verifier,
		BrowserBinding: flow.BrowserBinding, ReturnTo: returnTo, RedirectURI: p.RedirectURL(), TTL: ttl,
	}, vault.Event{UserID: userID, Platform: platform, Action: vault.ActionOAuthStart, Status: vault.Success, Flow: arm})
	if err != nil {
		return Started{}, fmt.Errorf("storing the state: %w", err)
	}
	return Started{URL: flow.URL, Binding: flow.BrowserBinding}, nil
}

// WithLogger is the same steps logging to logger (the audit rows'
// failures included): the handler that served the request names its
// lines, as Caddy's log filters expect.
func (f *Flows) WithLogger(logger *zap.Logger) *Flows {
	c := *f
	c.Logger = logger
	c.Audit = f.Audit.WithLogger(logger)
	return &c
}

func (f *Flows) finished(o Outcome) {
	if f.Finished != nil {
		f.Finished(o)
	}
}

func (f *Flows) tracer() trace.Tracer {
	if f.Tracer == nil {
		return noop.NewTracerProvider().Tracer("credgate")
	}
	return f.Tracer
}

func (f *Flows) logger() *zap.Logger {
	if f.Logger == nil {
		return zap.NewNop()
	}
	return f.Logger
}
