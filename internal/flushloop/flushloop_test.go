package flushloop_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/flushloop"
)

// It flushes on every tick, within the budget, and once more after the
// context ends, on a context that is still live.
func TestRunFlushesOnEveryTickAndOnceAtStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var ticks, final atomic.Int64
	done := make(chan struct{})
	go func() {
		flushloop.Run(ctx, 10*time.Millisecond, time.Second, func(fctx context.Context) error {
			if _, ok := fctx.Deadline(); !ok {
				t.Error("a flush without a budget")
			}
			if ctx.Err() != nil {
				if fctx.Err() != nil {
					t.Error("the last flush got a dead context")
				}
				final.Add(1)
			} else {
				ticks.Add(1)
			}
			return nil
		})
		close(done)
	}()
	for ticks.Load() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if final.Load() != 1 {
		t.Fatalf("%d flushes at stop, want 1", final.Load())
	}
}
