package telemetry

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A scrape never waits for a database that is down: it serves the last
// values read, and reads again only when the database is ready and the
// last read is older than GaugeTTL.
func TestCachedGaugesServeTheLastReadWhileTheDatabaseIsDown(t *testing.T) {
	t.Parallel()
	desc := prometheus.NewDesc("g", "g", nil, nil)
	ready, reads, fail := false, 0, false
	g := &CachedGauges{Descs: []*prometheus.Desc{desc}, Ready: func() bool { return ready },
		Read: func(ctx context.Context) ([]prometheus.Metric, error) {
			reads++
			if _, ok := ctx.Deadline(); !ok {
				t.Error("a read without a deadline")
			}
			if fail {
				return nil, errors.New("down")
			}
			return []prometheus.Metric{prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(reads))}, nil
		}}
	if m := g.Current(); len(m) != 0 || reads != 0 {
		t.Fatalf("not ready: %d metrics, %d reads", len(m), reads)
	}
	ready, fail = true, true
	if m := g.Current(); len(m) != 0 || reads != 1 {
		t.Fatalf("a failed read: %d metrics, %d reads", len(m), reads)
	}
	fail = false
	if m := g.Current(); len(m) != 1 || reads != 2 {
		t.Fatalf("a read: %d metrics, %d reads", len(m), reads)
	}
	if m := g.Current(); len(m) != 1 || reads != 2 {
		t.Fatalf("within GaugeTTL: %d metrics, %d reads, want the cached one", len(m), reads)
	}
	g.at = g.at.Add(-GaugeTTL)
	ready = false
	if m := g.Current(); len(m) != 1 || reads != 2 {
		t.Fatalf("stale but not ready: %d metrics, %d reads, want the cached one", len(m), reads)
	}
	ready = true
	if m := g.Current(); len(m) != 1 || reads != 3 {
		t.Fatalf("stale and ready: %d metrics, %d reads", len(m), reads)
	}
}
