package flags

import (
	"cmp"
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
