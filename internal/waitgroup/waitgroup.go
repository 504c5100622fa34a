// Package waitgroup waits for a sync.WaitGroup within a grace period: how
// a stopping instance gives its background work (stores and audit rows
// being retried, loops) a bounded time to finish.
package waitgroup

import (
	"sync"
	"time"
)

// Within waits up to d for wg and reports whether it finished in time.
// On false, wg's goroutines are still running; a caller may Wait again.
func Within(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
