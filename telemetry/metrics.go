// Package telemetry holds credgate's Prometheus metrics: the guide's Step
// 4.4 numbers (connection success rate and time per platform and arm,
// errors per platform, token refresh success rate) plus what an operator
// needs to trust the rollout (decisions by arm and reason) and the
// background work (states cleaned, token reads).
//
// One Metrics lives for the whole process and is shared by every Caddy
// config, so counters keep counting across reloads. Label values come
// from closed sets only — configured platform names, the two arms, the
// stable error codes — never a user id, a URL or an error message.
// Gauges that read the database (queue depth, accounts by status) are
// collected by the Caddy glue, which owns the pool.
package telemetry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are credgate's counters and histograms.
type Metrics struct {
	// registry holds the collectors for the OTLP export, which reads
	// them through the Prometheus bridge.
	registry *prometheus.Registry

	connections        *prometheus.CounterVec
	connectionDuration *prometheus.HistogramVec
	refreshes          *prometheus.CounterVec
	tokenReads         *prometheus.CounterVec
	egress             *prometheus.CounterVec
	statesCleaned      prometheus.Counter
	decisions          *prometheus.CounterVec
	identity           *prometheus.CounterVec
}

// Routes whose identity outcomes are counted, as the route label spells
// them: the app's connect route (where the rollout splits) and credgate's
// start route.
const (
	RouteConnect = "connect"
	RouteStart   = "start"
)

// Arms of the rollout, as the flow label spells them.
const (
	FlowNew    = "new"
	FlowLegacy = "legacy"
)

// Outcomes, as the outcome label spells them.
const (
	Success = "success"
	Failure = "failure"
)

// New returns the metrics, registered only with their own registry (for
// the OTLP export): register Collectors with Caddy's as well.
func New() *Metrics {
	m := &Metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_connections_total",
			Help: "Finished OAuth connections by platform, arm (new/legacy), outcome and stable error code.",
		}, []string{"platform", "flow", "outcome", "error"}),
		connectionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "credgate_connection_duration_seconds",
			Help: "Time from the start of a new-flow connection to the end of its callback.",
			// A person goes through a consent screen: seconds to minutes.
			Buckets: []float64{0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300, 600},
		}, []string{"platform", "flow"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_refresh_total",
			Help: "Token renewals by platform and outcome (success, failure, needs_reauth).",
		}, []string{"platform", "outcome"}),
		tokenReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_token_reads_total",
			Help: "Token API answers by platform and outcome (success or the error code).",
		}, []string{"platform", "outcome"}),
		egress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_egress_requests_total",
			Help: "Platform API calls made through the egress proxy, by platform and status class (2xx, 3xx, 4xx, 5xx, or the error code credgate answered with).",
		}, []string{"platform", "status_class"}),
		statesCleaned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credgate_states_cleaned_total",
			Help: "Expired OAuth states deleted.",
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_rollout_decisions_total",
			Help: "Rollout decisions at the app's connect route by platform, arm and reason.",
		}, []string{"platform", "arm", "reason"}),
		identity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_identity_total",
			Help: "Identity outcomes at the app's connect route and credgate's start route, by route and result (ok, refreshed, or why no user was recognised).",
		}, []string{"route", "result"}),
	}
	m.registry = prometheus.NewRegistry()
	m.registry.MustRegister(m.Collectors()...)
	return m
}

// Collectors are what to register with a Prometheus registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.connectionDuration, m.refreshes, m.tokenReads, m.egress, m.statesCleaned, m.decisions, m.identity}
}

// Prepare creates the success series of each platform at zero, so that
// the first connection or renewal after a start is an increase a rate
// can see, rather than a series that appears already counted.
func (m *Metrics) Prepare(platforms []string) {
	for _, p := range platforms {
		for _, flow := range []string{FlowNew, FlowLegacy} {
			m.connections.WithLabelValues(p, flow, Success, "")
		}
		m.refreshes.WithLabelValues(p, Success)
		m.tokenReads.WithLabelValues(p, Success)
		// The decision an unrecognised user gets, so that its rate is
		// right from the first such request.
		m.decisions.WithLabelValues(p, FlowLegacy, "no_identity")
	}
}

// PrepareIdentity creates every identity series at zero: results is the
// closed set of identity results.
func (m *Metrics) PrepareIdentity(results []string) {
	for _, route := range []string{RouteConnect, RouteStart} {
		for _, res := range results {
			m.identity.WithLabelValues(route, res)
		}
	}
}

// Identity counts one identity outcome at route.
func (m *Metrics) Identity(route, result string) {
	m.identity.WithLabelValues(route, result).Inc()
}

// Connection counts a finished connection; errorCode is "" on success.
// A duration of zero (the legacy arm, whose start credgate never sees) is
// not observed.
func (m *Metrics) Connection(platform, flow string, success bool, errorCode string, d time.Duration) {
	outcome := Success
	if !success {
		outcome = Failure
	}
	m.connections.WithLabelValues(platform, flow, outcome, errorCode).Inc()
	if d > 0 {
		m.connectionDuration.WithLabelValues(platform, flow).Observe(d.Seconds())
	}
}

// Refresh counts a renewal outcome: success, failure or needs_reauth.
func (m *Metrics) Refresh(platform, outcome string) {
	m.refreshes.WithLabelValues(platform, outcome).Inc()
}

// TokenRead counts a token API answer: success or its error code.
func (m *Metrics) TokenRead(platform, outcome string) {
	m.tokenReads.WithLabelValues(platform, outcome).Inc()
}

// Egress counts one call through the egress proxy.
func (m *Metrics) Egress(platform, statusClass string) {
	m.egress.WithLabelValues(platform, statusClass).Inc()
}

// StatesCleaned counts deleted expired states.
func (m *Metrics) StatesCleaned(n int64) {
	if n > 0 {
		m.statesCleaned.Add(float64(n))
	}
}

// Decision counts a rollout decision.
func (m *Metrics) Decision(platform, arm, reason string) {
	m.decisions.WithLabelValues(platform, arm, reason).Inc()
}
