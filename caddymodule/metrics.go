package caddymodule

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/telemetry"
)

// telemetryKey names the process's one set of metrics and OTel providers
// in the usage pool: counters must keep counting across config reloads,
// and fifty reloads must leave one tracer provider (and exporter) alive,
// not fifty. Each config still has a Prometheus registry of its own, which
// the shared collectors are registered with. The last config to let go
// flushes and shuts the providers down.
const telemetryKey = "credgate.telemetry"

var telemetryPool = caddy.NewUsagePool()

type sharedTelemetry struct {
	metrics *telemetry.Metrics
	health  *telemetry.Health
	export  *telemetry.Export
}

func (t sharedTelemetry) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return t.export.Shutdown(ctx)
}

// provisionTelemetry takes the shared metrics and providers (built from
// the OTEL_* variables the first time) and registers the metrics, and
// this config's database gauges and pool statistics, with the config's
// registry (served by Caddy's `metrics` handler and admin endpoint).
// That registry already holds Caddy's Go and process collectors
// (go_memstats_*, process_resident_memory_bytes): credgate adds none.
func (a *App) provisionTelemetry(ctx caddy.Context) error {
	shared, _, err := telemetryPool.LoadOrNew(telemetryKey, func() (caddy.Destructor, error) {
		m, h := telemetry.New(), telemetry.NewHealth()
		// The health counters go out over OTLP too, like the rest.
		if err := m.AlsoExport(h.Collectors()...); err != nil {
			return nil, err
		}
		e, err := telemetry.ExportFromEnv(context.Background(), m)
		return sharedTelemetry{metrics: m, health: h, export: e}, err
	})
	if err != nil {
		return err
	}
	t := shared.(sharedTelemetry)
	a.metrics, a.health, a.tracing, a.holdsTelemetry = t.metrics, t.health, t.export, true
	a.metrics.Prepare(a.platforms())
	results := []string{}
	for _, r := range identity.Results() {
		results = append(results, string(r))
	}
	a.metrics.PrepareIdentity(results)
	registry := ctx.GetMetricsRegistry()
	if registry == nil {
		return nil
	}
	collectors := append(a.metrics.Collectors(), a.health.Collectors()...)
	for _, c := range append(collectors, &gauges{app: a, store: report.StoreGauges(a.pool, a.accounts, a.platforms(), a.now, a.Available)}, poolStats{pool: a.pool}) {
		// A registry may already hold the shared collectors (a config
		// provisioned twice): that is the same collector, which is fine.
		if err := registry.Register(c); err != nil {
			if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
				return err
			}
		}
	}
	return nil
}

// gauges are the instance's own state at scrape time (no database round
// trip), and the database's gauges (report.StoreGauges), cached.
type gauges struct {
	app   *App
	store *telemetry.CachedGauges
}

var (
	haltedDesc = prometheus.NewDesc("credgate_rollout_halted",
		"1 while the rollout guard holds a platform's new starts on the legacy flow (only with the guard on).", []string{"platform"}, nil)
	flagReadyDesc = prometheus.NewDesc("credgate_flag_provider_ready",
		"1 when the rollout follows its flag source's current flags; 0 while every user is on the legacy flow or the source is failing (see service-health).", nil, nil)
	storageDesc = prometheus.NewDesc("credgate_storage_available",
		"1 while credgate's routes can serve: the database answers and the key check passed; 0 while they answer 503.", nil, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{flagReadyDesc, haltedDesc, storageDesc} {
		ch <- d
	}
	g.store.Describe(ch)
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	ready := 0.0
	if g.app.rollout.Ready() && (g.app.flagSource == nil || g.app.flagSource.SourceState()["ok"] == true) {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(flagReadyDesc, prometheus.GaugeValue, ready)
	// Read at every scrape (no database round trip): a quiet night has
	// no 503 to rate, and this still says the routes would answer one.
	available := 0.0
	if g.app.Available() {
		available = 1
	}
	ch <- prometheus.MustNewConstMetric(storageDesc, prometheus.GaugeValue, available)
	if g.app.guard != nil {
		for _, p := range g.app.guard.Platforms() {
			halted := 0.0
			if p.Halted() {
				halted = 1
			}
			ch <- prometheus.MustNewConstMetric(haltedDesc, prometheus.GaugeValue, halted, p.Name)
		}
	}
	g.store.Collect(ch)
}

// platforms are the configured platform names, sorted: the closed set the
// platform label takes its values from, and the rows of the rollout's
// status.
func (a *App) platforms() []string {
	return slices.Sorted(maps.Keys(a.Providers))
}
