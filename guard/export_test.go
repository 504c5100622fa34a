package guard

import (
	"context"
	"time"
)

// Latch exposes latch to the tests of the resume race.
func (g *Guard) Latch(ctx context.Context, h *Halt, observedResume *time.Time) (bool, error) {
	return g.latch(ctx, h, observedResume)
}
