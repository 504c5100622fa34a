package waitgroup_test

import (
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/waitgroup"
)

func TestWithinReportsWhetherTheGroupFinishedInTime(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	release := make(chan struct{})
	wg.Go(func() { <-release })
	if waitgroup.Within(&wg, 50*time.Millisecond) {
		t.Fatal("a group still running was reported finished")
	}
	close(release)
	if !waitgroup.Within(&wg, 5*time.Second) {
		t.Fatal("a finished group was reported running")
	}
}
