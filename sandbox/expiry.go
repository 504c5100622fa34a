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
// (codes, or tokens), two ways: a min-heap on when each may be forgotten,
// so the values due go first, each in O(log n); and the order they were
// issued in, so that past the cap the oldest goes, in O(1). Both only
// ever grow by one per value issued and are compacted in O(n) once per n
// values forgotten, so no request pays for the whole map: a cap pass that
// sorted the map (as this once did) held the server's lock for tens of
// milliseconds every few thousand values, and a benchmark at the cap saw
// every request behind it wait.
type forgetting struct {
	max   int
	due   dueHeap
	order []string // keys in the order issued, oldest at head
	head  int
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

// remember notes that key, issued now, may be forgotten at at.
func (f *forgetting) remember(key string, at time.Time) {
	heap.Push(&f.due, dueEntry{at: at, key: key})
	f.order = append(f.order, key)
}

// forget deletes from m every key due by now. Past the cap it then
// forgets the oldest issued, by issue order rather than by end: a token
// just issued may be the one nearest its end (a two-hour access token
// beside 180-day refresh tokens), and forgetting it would break a connect
// that just happened.
func forget[V any](f *forgetting, m map[string]V, now time.Time) {
	for f.due.Len() > 0 && !f.due[0].at.After(now) {
		delete(m, heap.Pop(&f.due).(dueEntry).key)
	}
	for len(m) > f.max && f.head < len(f.order) {
		delete(m, f.order[f.head])
		f.order[f.head] = ""
		f.head++
	}
	// Each list still names the values the other forgot. Once either
	// holds more than twice what m does, keep only what m still holds.
	slack := 2*len(m) + 64
	if len(f.order)-f.head > slack || f.head > slack {
		live := make([]string, 0, len(m)+len(m)/2)
		for _, k := range f.order[f.head:] {
			if _, ok := m[k]; ok {
				live = append(live, k)
			}
		}
		f.order, f.head = live, 0
	}
	if f.due.Len() > slack {
		f.due = slices.DeleteFunc(f.due, func(e dueEntry) bool { _, ok := m[e.key]; return !ok })
		heap.Init(&f.due)
	}
}
