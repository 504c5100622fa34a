package caddymodule

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// metricsKey names the process's one telemetry.Metrics in the usage pool:
// counters must keep counting across config reloads, while each config
// has a Prometheus registry of its own that they are registered with.
const metricsKey = "credgate.metrics"

var metricsPool = caddy.NewUsagePool()

type sharedMetrics struct{ *telemetry.Metrics }

func (sharedMetrics) Destruct() error { return nil }

// provisionMetrics takes the shared metrics and registers them, and this
// config's database gauges, with the config's registry (served by Caddy's
// `metrics` handler and admin endpoint).
func (a *App) provisionMetrics(ctx caddy.Context) error {
	m, _, err := metricsPool.LoadOrNew(metricsKey, func() (caddy.Destructor, error) {
		return sharedMetrics{telemetry.New()}, nil
	})
	if err != nil {
		return err
	}
	a.metrics = m.(sharedMetrics).Metrics
	a.holdsMetrics = true
	registry := ctx.GetMetricsRegistry()
	if registry == nil {
		return nil
	}
	for _, c := range append(a.metrics.Collectors(), &gauges{app: a}) {
		// Two credgate apps never share a config, but a registry may
		// already hold the shared collectors (a config provisioned twice):
		// that is the same collector, which is fine.
		if err := registry.Register(c); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				return err
			}
		}
	}
	return nil
}

// gauges reads the state the database holds at scrape time, at most
// every gaugeTTL, so that frequent scrapes cost the database little.
type gauges struct {
	app *App

	mu     sync.Mutex
	at     time.Time
	cached []prometheus.Metric
}

const gaugeTTL = 10 * time.Second

var (
	queueJobsDesc = prometheus.NewDesc("credgate_refresh_queue_jobs",
		"Refresh jobs by status (pending, due, running, overdue, dead).", []string{"status"}, nil)
	oldestDueDesc = prometheus.NewDesc("credgate_refresh_oldest_pending_seconds",
		"How long the longest-waiting due refresh job has waited.", nil, nil)
	accountsDesc = prometheus.NewDesc("credgate_accounts",
		"Accounts by platform and status (connected, expiring, needs_reauth, revoked, disconnected).", []string{"platform", "status"}, nil)
	flagReadyDesc = prometheus.NewDesc("credgate_flag_provider_ready",
		"1 when the rollout's flag provider has been ready; 0 means every user is on the legacy flow.", nil, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueJobsDesc, oldestDueDesc, accountsDesc, flagReadyDesc} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	ready := 0.0
	if g.app.rollout.Ready() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(flagReadyDesc, prometheus.GaugeValue, ready)
	for _, m := range g.fromDatabase() {
		ch <- m
	}
}

// fromDatabase returns the database gauges, cached; none while the
// database is unreachable (a scrape must not wait for it).
func (g *gauges) fromDatabase() []prometheus.Metric {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.at) < gaugeTTL || !g.app.Available() {
		return g.cached
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []prometheus.Metric
	st, err := vault.RefreshQueue{}.Stats(ctx, g.app.pool, g.app.now(), overdueGrace)
	if err != nil {
		return g.cached
	}
	for status, n := range map[string]int64{"pending": st.Pending, "due": st.Due, "running": st.Running, "overdue": st.Overdue, "dead": st.Dead} {
		out = append(out, prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, float64(n), status))
	}
	out = append(out, prometheus.MustNewConstMetric(oldestDueDesc, prometheus.GaugeValue, st.OldestDue.Seconds()))
	rows, err := g.app.pool.Query(ctx, `SELECT platform, status, count(*) FROM social_accounts
		WHERE platform = ANY($1) GROUP BY 1, 2`, g.app.platforms())
	if err != nil {
		return g.cached
	}
	counts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (prometheus.Metric, error) {
		var platform, status string
		var n int64
		if err := r.Scan(&platform, &status, &n); err != nil {
			return nil, err
		}
		return prometheus.MustNewConstMetric(accountsDesc, prometheus.GaugeValue, float64(n), platform, status), nil
	})
	if err != nil {
		return g.cached
	}
	g.cached, g.at = append(out, counts...), time.Now()
	return g.cached
}

// platforms are the configured platform names: the closed set the
// platform label takes its values from.
func (a *App) platforms() []string {
	var out []string
	for name := range a.Providers {
		out = append(out, name)
	}
	return out
}
