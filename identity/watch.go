package identity

import (
	"sync"
	"time"
)

// The watch's window: six ten-second buckets, so a problem shows within a
// minute and a fixed one stops showing within a minute.
const (
	watchBucket  = 10 * time.Second
	watchBuckets = 6
	// WatchEvery is how often the watch lets a warning through.
	WatchEvery = time.Minute
	// watchMinRequests: fewer requests than this in the window say
	// nothing about the app's users.
	watchMinRequests = 10
)

// Watch counts the identity results of the app's connect route over the
// last minute, so that an operator whose users are not recognised (every
// one of them silently kept on the legacy flow) is told: by a warning at
// most once a minute, and by the share that service-health shows. It is
// safe for concurrent use.
type Watch struct {
	mu       sync.Mutex
	buckets  [watchBuckets]watchBucketCounts
	lastWarn time.Time
}

type watchBucketCounts struct {
	start  time.Time
	counts map[Result]int
}

// WatchView is the window's counts.
type WatchView struct {
	Requests int            `json:"requests"`
	Usable   int            `json:"usable"`
	ByResult map[Result]int `json:"by_result"`
	// UnusableShare is the share of requests with no usable identity.
	UnusableShare float64 `json:"unusable_share"`
	// Commonest is the commonest reason for no identity, "" if none.
	Commonest Result `json:"commonest_reason,omitempty"`
}

// MostlyUnrecognised reports whether most of the window's requests, of
// enough to mean something, carried no usable identity.
func (v WatchView) MostlyUnrecognised() bool {
	return v.Requests >= watchMinRequests && v.UnusableShare > 0.5
}

// Record counts one result at now.
func (w *Watch) Record(res Result, now time.Time) {
	start := now.Truncate(watchBucket)
	w.mu.Lock()
	defer w.mu.Unlock()
	b := &w.buckets[start.Unix()/int64(watchBucket/time.Second)%watchBuckets]
	if !b.start.Equal(start) {
		*b = watchBucketCounts{start: start, counts: map[Result]int{}}
	}
	b.counts[res]++
}

// View returns the counts of the last minute.
func (w *Watch) View(now time.Time) WatchView {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.view(now)
}

func (w *Watch) view(now time.Time) WatchView {
	v := WatchView{ByResult: map[Result]int{}}
	oldest := now.Truncate(watchBucket).Add(-(watchBuckets - 1) * watchBucket)
	for _, b := range w.buckets {
		if b.start.Before(oldest) || b.start.After(now) {
			continue
		}
		for res, n := range b.counts {
			v.ByResult[res] += n
			v.Requests += n
			if res.Usable() {
				v.Usable += n
			}
		}
	}
	if v.Requests > 0 {
		v.UnusableShare = float64(v.Requests-v.Usable) / float64(v.Requests)
	}
	best := 0
	for _, res := range Results() { // a fixed order breaks ties
		if n := v.ByResult[res]; !res.Usable() && n > best {
			v.Commonest, best = res, n
		}
	}
	return v
}

// Warn reports whether to warn now that most of the last minute's
// requests carried no usable identity: at most once per WatchEvery, and
// only with enough requests to mean something. rolloutOn is asked only
// then (it may cost a flag evaluation): with the rollout at 0 % an
// unrecognised user loses nothing.
func (w *Watch) Warn(now time.Time, rolloutOn func() bool) (WatchView, bool) {
	w.mu.Lock()
	v := w.view(now)
	due := now.Sub(w.lastWarn) >= WatchEvery && v.MostlyUnrecognised()
	if due {
		// Taken before asking rolloutOn, so that concurrent requests do
		// not all evaluate the flags.
		w.lastWarn = now
	}
	w.mu.Unlock()
	return v, due && rolloutOn()
}
