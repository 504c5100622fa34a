// Package ratelimit is a token bucket per key, in memory: it bounds how
// fast one user can make credgate write (an OAuth start writes a state
// row and an append-only audit row), without a database round trip.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter allows Burst events per key at once, refilled at Burst per
// Per. Safe for concurrent use. Memory is bounded by the keys active in
// the last Per: full buckets are dropped as it goes.
type Limiter struct {
	burst float64
	per   time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New returns a limiter of burst events per period.
func New(burst int, per time.Duration) *Limiter {
	return &Limiter{burst: float64(burst), per: per, buckets: map[string]*bucket{}}
}

// Allow takes one event for key at now. When the bucket is empty it
// returns false and how long until the next event is allowed.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+l.refill(now.Sub(b.at)))
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.burst * float64(l.per))
	return false, max(wait, time.Second)
}

func (l *Limiter) refill(elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return l.burst * float64(elapsed) / float64(l.per)
}

// sweep drops, at most once per period, the buckets that have refilled:
// they hold nothing a new bucket would not.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.per {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+l.refill(now.Sub(b.at)) >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// Len is the number of keys held, for tests.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
