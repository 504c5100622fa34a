package telemetry

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GaugeTTL is how long gauges read from the database are served before
// they are read again: frequent scrapes then cost the database little.
const GaugeTTL = 10 * time.Second

// CachedGauges is a Prometheus collector of gauges read from the database
// at scrape time, at most every GaugeTTL. A scrape never waits for a
// database that is down: while Ready says no, or a read fails, it serves
// the last values read.
type CachedGauges struct {
	Descs []*prometheus.Desc
	// Ready says the database can be read now.
	Ready func() bool
	// Read reads the gauges within ctx's 2 s budget.
	Read func(ctx context.Context) ([]prometheus.Metric, error)

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
}

func (g *CachedGauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range g.Descs {
		ch <- d
	}
}

func (g *CachedGauges) Collect(ch chan<- prometheus.Metric) {
	for _, m := range g.Current() {
		ch <- m
	}
}

// Current returns the gauges, read again if the last read is older than
// GaugeTTL and the database is ready.
func (g *CachedGauges) Current() []prometheus.Metric {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.at) < GaugeTTL || !g.Ready() {
		return g.cached
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m, err := g.Read(ctx); err == nil {
		g.cached, g.at = m, time.Now()
	}
	return g.cached
}
