package flags

import (
	"slices"
	"sync"
)

// counter counts occurrences of a key; the decision and outcome counters
// are two of them. Safe for concurrent use.
type counter[K comparable] struct {
	mu     sync.Mutex
	counts map[K]uint64
}

func newCounter[K comparable]() counter[K] { return counter[K]{counts: map[K]uint64{}} }

func (c *counter[K]) add(k K) {
	c.mu.Lock()
	c.counts[k]++
	c.mu.Unlock()
}

// snapshot copies the counts out, ordered by cmp for stable output.
func snapshot[K comparable, R any](c *counter[K], row func(K, uint64) R, cmp func(a, b R) int) []R {
	c.mu.Lock()
	out := make([]R, 0, len(c.counts))
	for k, n := range c.counts {
		out = append(out, row(k, n))
	}
	c.mu.Unlock()
	slices.SortFunc(out, cmp)
	return out
}
