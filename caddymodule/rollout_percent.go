package caddymodule

import (
	"context"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
)

// percentEvery is how long the decision route answers from the last
// reading of a platform's percentage: sampling a remote flagd takes a
// thousand round trips, and a page asks on every click.
const percentEvery = 5 * time.Second

// percentReads holds each app's last readings (weakly: an entry goes with
// its app, after a reload).
var percentReads sync.Map // weak.Pointer[App] → *percentRead

type percentRead struct {
	mu   sync.Mutex
	last map[string]flags.InForce
	at   map[string]time.Time
}

// inForceRecently is what the flags put in force for platform, read at
// most every percentEvery: the flag file's rule when it can be read, as
// the admin rollout route reads it, else a sample through the provider.
func (a *App) inForceRecently(ctx context.Context, platform string) flags.InForce {
	key := weak.Make(a)
	v, loaded := percentReads.LoadOrStore(key, &percentRead{last: map[string]flags.InForce{}, at: map[string]time.Time{}})
	if !loaded {
		runtime.AddCleanup(a, func(k weak.Pointer[App]) { percentReads.Delete(k) }, key)
	}
	c := v.(*percentRead)
	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.at[platform]; ok && time.Since(at) < percentEvery {
		return c.last[platform]
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// exactPercentages replaces Flags only when it read the rule.
	status := []guard.RolloutStatus{{Platform: platform, Flags: &flags.InForce{Platform: platform}}}
	a.exactPercentages(ctx, status)
	in := *status[0].Flags
	if in.Measured == "" {
		in = a.rollout.InForce(ctx, platform, guard.RolloutSamples)
	}
	if in.Ready {
		// A source not ready yet is asked again next time.
		c.last[platform], c.at[platform] = in, time.Now()
	}
	return in
}
