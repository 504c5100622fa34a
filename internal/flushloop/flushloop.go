// Package flushloop runs the loop every in-memory counter shared through
// PostgreSQL needs (the rollout's decisions and outcomes, the back end's
// reads): flush every interval, each flush within a budget, and once more
// when the instance stops, so that a replica that stops or reloads keeps
// its last counts. A failed flush loses nothing: the counters keep what
// was not written and the next flush carries it.
package flushloop

import (
	"context"
	"time"
)

// Run calls flush every interval until ctx ends, then once more on a
// context of its own; each call gets budget.
func Run(ctx context.Context, interval, budget time.Duration, flush func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
			_ = flush(final)
			cancel()
			return
		case <-t.C:
			// Not cancelled by ctx: a stop that cancelled a flush in
			// flight could cut it after PostgreSQL committed and before
			// the counters heard, and the last flush would then add the
			// same counts again (seen under load: a window counted
			// twice). The stop waits for it instead; the budget bounds it.
			tick, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
			_ = flush(tick)
			cancel()
		}
	}
}
