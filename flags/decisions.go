package flags

import (
	"cmp"
	"context"

	"github.com/open-feature/go-sdk/openfeature"
)

// DecisionKey groups decisions for counting.
type DecisionKey struct {
	Arm      Arm
	Variant  string
	Platform string
	Reason   Reason
}

// Decisions counts rollout decisions by arm, variant, platform and reason,
// for the telemetry layer to export. It is safe for concurrent use.
type Decisions struct {
	c counter[DecisionKey]
}

// NewDecisions returns an empty counter.
func NewDecisions() *Decisions { return &Decisions{c: newCounter[DecisionKey]()} }

func (c *Decisions) record(platform string, d Decision) Decision {
	c.c.add(DecisionKey{Arm: d.Arm, Variant: d.Variant, Platform: platform, Reason: d.Reason})
	return d
}

// DecisionCount is one row of a snapshot.
type DecisionCount struct {
	DecisionKey
	Count uint64
}

// Snapshot returns the counts, sorted for stable output.
func (c *Decisions) Snapshot() []DecisionCount {
	return snapshot(&c.c, func(k DecisionKey, n uint64) DecisionCount { return DecisionCount{k, n} },
		func(a, b DecisionCount) int {
			return cmp.Or(cmp.Compare(a.Platform, b.Platform), cmp.Compare(a.Arm, b.Arm),
				cmp.Compare(a.Reason, b.Reason), cmp.Compare(a.Variant, b.Variant))
		})
}

// decisionHook is the OpenFeature hook that counts every evaluation of
// oauth-new-flow, whatever its outcome: Finally runs for errors and for
// short-circuits (provider not ready) too.
type decisionHook struct {
	counts *Decisions
}

var _ openfeature.Hook = decisionHook{}

func (decisionHook) Before(context.Context, openfeature.HookContext, openfeature.HookHints) (*openfeature.EvaluationContext, error) {
	return nil, nil
}

func (decisionHook) After(context.Context, openfeature.HookContext, openfeature.InterfaceEvaluationDetails, openfeature.HookHints) error {
	return nil
}

func (decisionHook) Error(context.Context, openfeature.HookContext, error, openfeature.HookHints) {}

func (h decisionHook) Finally(_ context.Context, hc openfeature.HookContext, d openfeature.InterfaceEvaluationDetails, _ openfeature.HookHints) {
	if hc.FlagKey() != FlagNewFlow {
		return
	}
	platform, _ := hc.EvaluationContext().Attribute("platform").(string)
	h.counts.record(platform, decisionOf(d.Value, d.Variant, d.ErrorCode, d.ErrorMessage))
}
