package flags

import "cmp"

// OutcomeKey groups finished flows for counting.
type OutcomeKey struct {
	Arm      Arm
	Platform string
	Success  bool
}

// Outcomes counts how flows end, per arm and platform, so both sides of
// the split can be compared while the rollout grows: credgate records its
// own flows, and the legacy app's callbacks by their HTTP status (2xx/3xx
// success, anything else failure). Safe for concurrent use.
type Outcomes struct {
	c counter[OutcomeKey]
}

// NewOutcomes returns an empty counter.
func NewOutcomes() *Outcomes { return &Outcomes{c: newCounter[OutcomeKey]()} }

// Record counts one finished flow.
func (o *Outcomes) Record(arm Arm, platform string, success bool) {
	o.c.add(OutcomeKey{Arm: arm, Platform: platform, Success: success})
}

// OutcomeCount is one row of a snapshot.
type OutcomeCount struct {
	OutcomeKey
	Count uint64
}

// Snapshot returns the counts, sorted for stable output.
func (o *Outcomes) Snapshot() []OutcomeCount {
	return snapshot(&o.c, func(k OutcomeKey, n uint64) OutcomeCount { return OutcomeCount{k, n} },
		func(a, b OutcomeCount) int {
			return cmp.Or(cmp.Compare(a.Platform, b.Platform), cmp.Compare(a.Arm, b.Arm), boolCompare(a.Success, b.Success))
		})
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}
