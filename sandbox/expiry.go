package sandbox

import (
	"container/heap"
	"slices"
	"time"
)

// Default bounds on what the server remembers. A code is kept for
// codeMemory after it was issued: past CodeTTL it can only be refused,
// and the extra CodeTTL lets the refusal still be counted as
// expired_code (or reused_code) rather than unknown_code. A token is kept
// until it expires. The caps bound what lifetimes alone do not: Twitter's
// refresh tokens live 180 days, so without one a long demo or benchmark
// would keep every token it ever issued, and the server would grow (by
// about a kilobyte per connect) until the process died. At the caps it
// holds about 40 MB: 25,000 connects' tokens, far more than a demo
// makes, while a benchmark at 1,000 connects/s reaches them in half a
// minute and then holds its size.
const (
	codeMemory       = 2 * CodeTTL
	DefaultMaxCodes  = 20_000
	DefaultMaxTokens = 50_000
)

// forgetting is what the server remembers of one kind of issued value
// (codes, or tokens): a min-heap on when each may be forgotten, so the
// values due go first, each in O(log n).
type forgetting struct {
	max int
	due dueHeap
}

type dueEntry struct {
	at  time.Time
	key string
}

type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// remember notes that key may be forgotten at at.
func (f *forgetting) remember(key string, at time.Time) {
	heap.Push(&f.due, dueEntry{at: at, key: key})
}

// forget deletes from m every key due by now. Past the cap it then
// forgets the oldest issued tenth, by issue time rather than by end: a
// token just issued may be the one nearest its end (a two-hour access
// token beside 180-day refresh tokens), and forgetting it would break a
// connect that just happened. That pass costs O(n log n) once per n/10
// values issued, and rebuilds the heap without the values it dropped.
func forget[V any](f *forgetting, m map[string]V, now time.Time, issued func(V) time.Time) {
	for f.due.Len() > 0 && !f.due[0].at.After(now) {
		delete(m, heap.Pop(&f.due).(dueEntry).key)
	}
	if len(m) <= f.max {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return issued(m[a]).Compare(issued(m[b])) })
	for _, k := range keys[:len(m)-f.max*9/10] {
		delete(m, k)
	}
	f.due = slices.DeleteFunc(f.due, func(e dueEntry) bool { _, ok := m[e.key]; return !ok })
	heap.Init(&f.due)
}
