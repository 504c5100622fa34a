package flags

import (
	"sort"
	"sync"
)

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
	mu     sync.Mutex
	counts map[OutcomeKey]uint64
}

// NewOutcomes returns an empty counter.
func NewOutcomes() *Outcomes { return &Outcomes{counts: map[OutcomeKey]uint64{}} }

// Record counts one finished flow.
func (o *Outcomes) Record(arm Arm, platform string, success bool) {
	o.mu.Lock()
	o.counts[OutcomeKey{Arm: arm, Platform: platform, Success: success}]++
	o.mu.Unlock()
}

// OutcomeCount is one row of a snapshot.
type OutcomeCount struct {
	OutcomeKey
	Count uint64
}

// Snapshot returns the counts, sorted for stable output.
func (o *Outcomes) Snapshot() []OutcomeCount {
	o.mu.Lock()
	out := make([]OutcomeCount, 0, len(o.counts))
	for k, n := range o.counts {
		out = append(out, OutcomeCount{k, n})
	}
	o.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].OutcomeKey, out[j].OutcomeKey
		if a.Platform != b.Platform {
			return a.Platform < b.Platform
		}
		if a.Arm != b.Arm {
			return a.Arm < b.Arm
		}
		return !a.Success && b.Success
	})
	return out
}
