// Package flags decides, per user and platform, whether an OAuth flow goes
// to credgate's new flow or stays with the legacy app: the percentage
// rollout of the migration guide's Phase 4, behind the OpenFeature Go SDK.
//
// Two flags drive it:
//
//   - oauth-new-flow-enabled, a boolean kill switch, evaluated first;
//   - oauth-new-flow, a string flag whose "new" and "legacy" variants are
//     split by flagd's fractional operation on the user id, optionally
//     targeted per platform.
//
// Every failure falls back to legacy: no user id, the kill switch off, a
// provider that is not ready or has failed, a missing or disabled flag, an
// empty flag file, an unknown variant. Each fallback has its own Reason.
//
// Providers: flagd in-process reading a flag file (changes are picked up
// without a restart), flagd over RPC for a shared daemon, and a static
// percentage. Nothing outside this package imports a provider; the rest of
// credgate sees openfeature.FeatureProvider and Rollout.Decide.
//
// For the operator's commands it also reads and changes a flag file's
// rule itself: FileInForce states the percentage a file puts in force,
// exactly, and FlagSet.SetNewPercent with WriteFile changes it safely.
package flags

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
)

// The flag keys.
const (
	FlagNewFlow = "oauth-new-flow"
	FlagEnabled = "oauth-new-flow-enabled"
)

// Arm is the side of the split a flow goes to.
type Arm string

// The two arms.
const (
	ArmNew    Arm = "new"
	ArmLegacy Arm = "legacy"
)

// Reason says why a decision came out the way it did.
type Reason string

// The reasons. Everything but ReasonRollout is a fallback to legacy.
const (
	ReasonRollout          Reason = "rollout"            // the flag's split (or targeting) decided
	ReasonNoIdentity       Reason = "no_identity"        // no user id: never hashed
	ReasonKillSwitch       Reason = "kill_switch"        // oauth-new-flow-enabled is off
	ReasonProviderNotReady Reason = "provider_not_ready" // still starting, or failed to start
	ReasonProviderError    Reason = "provider_error"     // the provider failed to evaluate
	ReasonFlagNotFound     Reason = "flag_not_found"     // flag missing (or an empty flag file)
	ReasonFlagDisabled     Reason = "flag_disabled"      // flag state DISABLED
	ReasonInvalidVariant   Reason = "invalid_variant"    // a value other than "new" or "legacy"
	ReasonTimeout          Reason = "timeout"            // the provider did not answer within the decision deadline
	ReasonStoreUnavailable Reason = "store_unavailable"  // the new flow cannot start (database or keys): the app serves it
	ReasonGuardHalted      Reason = "guard_halted"       // the rollout guard halted the platform's new starts
)

// Decision is the outcome for one user and platform.
type Decision struct {
	Arm Arm
	// Variant is the flag variant, "" when none was evaluated.
	Variant string
	Reason  Reason
}

// Rollout evaluates the two flags through its own OpenFeature API
// instance, so that several rollouts (Caddy config reloads, parallel
// tests) never share global state.
type Rollout struct {
	api      *openfeature.EvaluationAPI
	client   *openfeature.Client
	provider openfeature.FeatureProvider
	counts   *Decisions
	outcomes *Outcomes
	// ready turns true the first time the provider reports ready. Until
	// then (never started, or failed to start) every decision is legacy:
	// a flagd provider whose file was missing at start answers
	// FLAG_NOT_FOUND, which would hide the real problem. After that it
	// stays true: flagd's state can stay ERROR after one bad file while it
	// keeps evaluating the last good one.
	ready atomic.Bool
	// timeout bounds one decision.
	timeout time.Duration
	// inForceBudget bounds InForce per platform.
	inForceBudget time.Duration
	// halted, when set, says a platform's new starts are halted.
	halted func(platform string) bool
}

// DefaultDecisionTimeout bounds a decision unless WithDecisionTimeout says
// otherwise: a user at the app's connect route never waits longer for the
// flag provider.
const DefaultDecisionTimeout = 100 * time.Millisecond

// Option adjusts a Rollout.
type Option func(*Rollout)

// WithDecisionTimeout sets the decision deadline (default
// DefaultDecisionTimeout); past it the decision is legacy, reason timeout.
func WithDecisionTimeout(d time.Duration) Option {
	return func(r *Rollout) {
		if d > 0 {
			r.timeout = d
		}
	}
}

// WithInForceBudget sets how long InForce may spend per platform (default
// inForceBudget, 2 s): a status page must not wait minutes on a remote
// daemon, but a test about the split, on a loaded machine, wants every
// sample.
func WithInForceBudget(d time.Duration) Option {
	return func(r *Rollout) {
		if d > 0 {
			r.inForceBudget = d
		}
	}
}

// WithHalts sends every new start on a platform for which halted is true
// to legacy, reason guard_halted, before any flag is evaluated (the
// rollout guard). halted must be cheap: it runs on every decision.
func WithHalts(halted func(platform string) bool) Option {
	return func(r *Rollout) { r.halted = halted }
}

// NewRollout wraps provider. Call Start before Decide; until the provider
// is ready every decision is legacy.
func NewRollout(provider openfeature.FeatureProvider, opts ...Option) *Rollout {
	api := isolated.NewAPI()
	r := &Rollout{api: api, provider: provider, counts: NewDecisions(), outcomes: NewOutcomes(), timeout: DefaultDecisionTimeout,
		inForceBudget: inForceBudget}
	for _, opt := range opts {
		opt(r)
	}
	r.client = api.NewClient()
	ready := func(openfeature.EventDetails) { r.ready.Store(true) }
	api.AddHandler(openfeature.ProviderReady, &ready)
	return r
}

// Start initialises the provider in the background and returns at once:
// a provider that is slow to start (a flagd daemon not yet up) must not
// hold up the server, and decisions are legacy until it is ready.
func (r *Rollout) Start(ctx context.Context) error {
	return r.api.SetProvider(ctx, r.provider)
}

// StartAndWait initialises the provider and waits until it is ready or
// has failed.
func (r *Rollout) StartAndWait(ctx context.Context) error {
	if err := r.api.SetProviderAndWait(ctx, r.provider); err != nil {
		return err
	}
	r.ready.Store(true)
	return nil
}

// Ready reports whether the provider has been ready at least once.
func (r *Rollout) Ready() bool { return r.ready.Load() }

// Close shuts the provider down.
func (r *Rollout) Close(ctx context.Context) error { return r.api.Shutdown(ctx) }

// Counts is the decision counter, by variant, platform and reason.
func (r *Rollout) Counts() *Decisions { return r.counts }

// Outcomes is the counter of finished flows by arm and platform.
func (r *Rollout) Outcomes() *Outcomes { return r.outcomes }

// Decide says which arm a flow for userID on platform goes to. It never
// fails: every problem is a legacy decision with its reason.
func (r *Rollout) Decide(ctx context.Context, userID, platform string) Decision {
	if userID == "" {
		return r.counts.record(platform, Decision{Arm: ArmLegacy, Reason: ReasonNoIdentity})
	}
	if r.halted != nil && r.halted(platform) {
		return r.counts.record(platform, Decision{Arm: ArmLegacy, Reason: ReasonGuardHalted})
	}
	if !r.ready.Load() {
		return r.counts.record(platform, Decision{Arm: ArmLegacy, Reason: ReasonProviderNotReady})
	}
	// A provider that hangs (a flagd daemon that accepts connections and
	// never answers) must not hold the user: evaluate aside, and past the
	// deadline decide legacy. The evaluation itself gets a quarter more
	// time, so that a remote provider told of the deadline (flagd reads
	// it from the request) cannot answer "deadline exceeded" just before
	// it and pass for a provider error. It finishes, or not, on its own.
	evalCtx, cancel := context.WithTimeout(ctx, r.timeout+r.timeout/4)
	defer cancel()
	deadline := time.NewTimer(r.timeout)
	defer deadline.Stop()
	decided := make(chan Decision, 1)
	go func() { decided <- r.evaluate(evalCtx, userID, platform) }()
	// Exactly one of the two is counted: an evaluation that finishes
	// after the deadline is not.
	select {
	case d := <-decided:
		if d.Reason != ReasonRollout && d.Reason != ReasonKillSwitch && evalCtx.Err() != nil {
			// It failed because its context ended (the caller went away).
			d = Decision{Arm: ArmLegacy, Reason: ReasonTimeout}
		}
		return r.counts.record(platform, d)
	case <-deadline.C:
		return r.counts.record(platform, Decision{Arm: ArmLegacy, Reason: ReasonTimeout})
	case <-ctx.Done():
		return r.counts.record(platform, Decision{Arm: ArmLegacy, Reason: ReasonTimeout})
	}
}

// evaluate runs the two flags for a user with an identity, once the
// provider is ready. Decide counts what it returns.
func (r *Rollout) evaluate(ctx context.Context, userID, platform string) Decision {
	evalCtx := openfeature.NewEvaluationContext(userID, map[string]any{"platform": platform})

	// See evaluationLock: flagd core's rule engine has a global table.
	evaluationLock.RLock()
	enabled, err := r.client.BooleanValueDetails(ctx, FlagEnabled, false, evalCtx)
	evaluationLock.RUnlock()
	if err != nil {
		return Decision{Arm: ArmLegacy, Reason: reasonOf(enabled.ErrorCode, enabled.ErrorMessage)}
	}
	if !enabled.Value {
		return Decision{Arm: ArmLegacy, Variant: enabled.Variant, Reason: ReasonKillSwitch}
	}

	evaluationLock.RLock()
	d, _ := r.client.StringValueDetails(ctx, FlagNewFlow, string(ArmLegacy), evalCtx)
	evaluationLock.RUnlock()
	return decisionOf(d.Value, d.Variant, d.ErrorCode, d.ErrorMessage)
}

// decisionOf turns an oauth-new-flow evaluation into a decision.
func decisionOf(value any, variant string, code openfeature.ErrorCode, message string) Decision {
	if code != "" {
		return Decision{Arm: ArmLegacy, Variant: variant, Reason: reasonOf(code, message)}
	}
	switch value {
	case string(ArmNew):
		return Decision{Arm: ArmNew, Variant: variant, Reason: ReasonRollout}
	case string(ArmLegacy):
		return Decision{Arm: ArmLegacy, Variant: variant, Reason: ReasonRollout}
	}
	return Decision{Arm: ArmLegacy, Variant: variant, Reason: ReasonInvalidVariant}
}

func reasonOf(code openfeature.ErrorCode, message string) Reason {
	switch code {
	case openfeature.ProviderNotReadyCode:
		return ReasonProviderNotReady
	case openfeature.FlagNotFoundCode:
		// flagd reports a DISABLED flag as FLAG_NOT_FOUND "… is disabled".
		if strings.Contains(message, "disabled") {
			return ReasonFlagDisabled
		}
		return ReasonFlagNotFound
	case openfeature.TypeMismatchCode:
		return ReasonInvalidVariant
	}
	return ReasonProviderError
}

// evaluationLock serialises creating a flagd provider with evaluations.
// Every flagd in-process provider registers its custom operations in
// jsonlogic's package-level table while evaluations read it; without this
// lock a config reload (a new provider while the old one serves) is a data
// race. Evaluations share the read side, so they do not wait for each
// other.
var evaluationLock sync.RWMutex

// InForce is the rollout a platform's flags put in force, as the provider
// evaluates them now: for `rollout status` and the admin route.
type InForce struct {
	Platform string `json:"platform"`
	// Ready is false while the provider has not been ready; nothing else
	// is set then.
	Ready bool `json:"ready"`
	// KillSwitchOn is oauth-new-flow-enabled for this platform.
	KillSwitchOn bool `json:"kill_switch_on"`
	// NewPercent is the share of users the split sends to the new arm
	// (before the kill switch): the percentage in force. Measured says
	// how it was found: "rule", read from the targeting rule, exact (see
	// FileInForce); or "sampled", the share of Samples sample user ids,
	// whatever the source (file, daemon, static), which may be fewer than
	// asked when the source is slow (see Rollout.InForce).
	NewPercent float64 `json:"new_percent"`
	Measured   string  `json:"measured,omitempty"`
	Samples    int     `json:"samples"`
	// Note says why a file's rule was sampled rather than read.
	Note string `json:"note,omitempty"`
	// Problem is set when an evaluation failed.
	Problem string `json:"problem,omitempty"`
}

// inForceBudget bounds InForce per platform: against a remote daemon
// each sample is a round trip, and a status page must not take minutes.
const inForceBudget = 2 * time.Second

// InForce evaluates the flags for platform over up to samples fixed
// sample user ids, stopping early when ctx ends or its budget is spent
// (Samples says how many were evaluated). It neither counts as decisions
// nor applies the guard, and it holds the evaluation lock one evaluation
// at a time, so a config reload never waits behind it.
func (r *Rollout) InForce(ctx context.Context, platform string, samples int) InForce {
	out := InForce{Platform: platform, Ready: r.ready.Load(), Measured: MeasuredSampled}
	if !out.Ready {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, r.inForceBudget)
	defer cancel()
	attrs := map[string]any{"platform": platform}
	evaluationLock.RLock()
	enabled, err := r.client.BooleanValueDetails(ctx, FlagEnabled, false, openfeature.NewEvaluationContext(sampleUser(0), attrs))
	evaluationLock.RUnlock()
	if err != nil {
		out.Problem = FlagEnabled + ": " + string(reasonOf(enabled.ErrorCode, enabled.ErrorMessage))
		return out
	}
	out.KillSwitchOn = enabled.Value
	onNew := 0
	for i := 0; i < samples && ctx.Err() == nil; i++ {
		evaluationLock.RLock()
		d, err := r.client.StringValueDetails(ctx, FlagNewFlow, string(ArmLegacy), openfeature.NewEvaluationContext(sampleUser(i), attrs))
		evaluationLock.RUnlock()
		if err != nil {
			if ctx.Err() != nil {
				break // the budget, not the flag
			}
			out.Problem = FlagNewFlow + ": " + string(reasonOf(d.ErrorCode, d.ErrorMessage))
			return out
		}
		out.Samples++
		if d.Value == string(ArmNew) {
			onNew++
		}
	}
	if out.Samples > 0 {
		out.NewPercent = 100 * float64(onNew) / float64(out.Samples)
	}
	return out
}

// sampleUser is the i-th sample user id InForce evaluates.
func sampleUser(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }
