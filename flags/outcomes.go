package flags

import (
	"cmp"
	"crypto/sha256"
	"sync"
	"time"
)

// OutcomeKey groups finished flows for counting.
type OutcomeKey struct {
	Arm      Arm
	Platform string
	Success  bool
	// UserCaused: a failure the user can cause (RecordUserCaused).
	UserCaused bool
}

// Outcomes counts how flows end, per arm and platform, so both sides of
// the split can be compared while the rollout grows: credgate records its
// own flows, and the legacy app's callbacks by their HTTP status (2xx/3xx
// success, anything else failure). Safe for concurrent use.
type Outcomes struct {
	c counter[OutcomeKey]

	// UserWindow is how long a user's failure keeps that user's next
	// ones from counting (RecordUserCaused): the guard's window.
	UserWindow time.Duration

	mu   sync.Mutex
	seen map[[32]byte]time.Time // sha256(platform, user) → when counted
	next time.Time              // when seen is next pruned
}

// DefaultUserWindow is Outcomes.UserWindow when unset.
const DefaultUserWindow = 10 * time.Minute

// NewOutcomes returns an empty counter.
func NewOutcomes() *Outcomes {
	return &Outcomes{c: newCounter[OutcomeKey](), seen: map[[32]byte]time.Time{}}
}

// Record counts one finished flow whose outcome credgate can attribute:
// a success, or a failure of the platform (it was down, it answered
// nonsense) or of credgate itself (it could not store the tokens).
func (o *Outcomes) Record(arm Arm, platform string, success bool) {
	o.c.add(OutcomeKey{Arm: arm, Platform: platform, Success: success})
}

// RecordUserCaused counts a failure the user may have caused on purpose
// (an error= on the callback URL, a code the platform refused: both are
// in the user's hands), at most once per user and platform per
// UserWindow in this process. Returns whether it counted.
func (o *Outcomes) RecordUserCaused(arm Arm, platform, user string) bool {
	now := time.Now()
	window := o.UserWindow
	if window <= 0 {
		window = DefaultUserWindow
	}
	key := sha256.Sum256([]byte(platform + "\x00" + user))
	o.mu.Lock()
	if now.After(o.next) {
		// Forget the users whose window has passed, at most once a
		// window: the set stays as large as one window's users.
		for k, at := range o.seen {
			if now.Sub(at) >= window {
				delete(o.seen, k)
			}
		}
		o.next = now.Add(window)
	}
	at, counted := o.seen[key]
	fresh := !counted || now.Sub(at) >= window
	if fresh {
		o.seen[key] = now
	}
	o.mu.Unlock()
	if fresh {
		o.c.add(OutcomeKey{Arm: arm, Platform: platform, UserCaused: true})
	}
	return fresh
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
			return cmp.Or(cmp.Compare(a.Platform, b.Platform), cmp.Compare(a.Arm, b.Arm), boolCompare(a.Success, b.Success),
				boolCompare(a.UserCaused, b.UserCaused))
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
