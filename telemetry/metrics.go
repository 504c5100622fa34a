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

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/oauth"
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
	webhooks           *prometheus.CounterVec
	webhookDuration    prometheus.Histogram
}

// Routes whose identity outcomes are counted, as the route label spells
// them: the app's connect route (where the rollout splits) and credgate's
// start route.
const (
	RouteConnect = "connect"
	RouteStart   = "start"
)

// Outcomes, as the outcome label spells them. A connection's success
// rate is success / (success + failure) everywhere credgate reports one
// (the dashboard, the alert rules, verify, report, rollout status and the
// guard): a user who declines at the consent screen says nothing about
// the flow's health and is counted apart, as declined (docs/telemetry.md).
const (
	Success  = "success"
	Failure  = "failure"
	Declined = "declined"
)

// Outcome is the outcome of a connection that ended with errorCode ("" when
// it succeeded): declined for access_denied, failure for any other code.
func Outcome(errorCode string) string {
	switch errorCode {
	case "":
		return Success
	case string(oauth.CodeAccessDenied):
		return Declined
	}
	return Failure
}

// Error codes of the connections credgate counts besides the platforms'
// (oauth.Codes): the new flow's own, and the legacy arm's, which credgate
// sees only through the app's answer.
const (
	// CodeStorageUnavailable: the platform issued tokens and credgate
	// could not store them (they were revoked where possible).
	CodeStorageUnavailable = "storage_unavailable"
	// CodeAppError: the app's callback failed to answer at all.
	CodeAppError = "app_error"
	// CodeAppHTTP4xx, CodeAppHTTP5xx: the app's callback answered 4xx or 5xx.
	CodeAppHTTP4xx = "http_4xx"
	CodeAppHTTP5xx = "http_5xx"
	// CodeAppErrorRedirect: the app's callback redirected with a failure
	// (legacy_error_pattern).
	CodeAppErrorRedirect = "app_error_redirect"
)

// newFlowCodes and legacyCodes are the closed sets of failure codes per
// arm, whose series Prepare creates at zero.
func newFlowCodes() []string {
	var out []string
	for _, c := range oauth.Codes() {
		if c != oauth.CodeAccessDenied {
			out = append(out, string(c))
		}
	}
	return append(out, CodeStorageUnavailable)
}

func legacyCodes() []string {
	out := []string{CodeAppError, CodeAppHTTP4xx, CodeAppHTTP5xx, CodeAppErrorRedirect}
	// The platform's error= on the app's callback, declines apart.
	for _, c := range oauth.Codes() {
		if c != oauth.CodeAccessDenied {
			out = append(out, string(c))
		}
	}
	return out
}

// RefreshOutcomes are the outcomes of a renewal.
var RefreshOutcomes = []string{Success, Failure, "needs_reauth"}

// New returns the metrics, registered only with their own registry (for
// the OTLP export): register Collectors with Caddy's as well.
func New() *Metrics {
	m := &Metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_connections_total",
			Help: "Finished OAuth connections by platform, arm (new/legacy), outcome (success, failure, declined) and stable error code.",
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
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_webhook_deliveries_total",
			Help: "Attempts to deliver an account event to the app's webhook, by event and outcome (delivered, retry, failed: given up after retry_for).",
		}, []string{"event", "outcome"}),
		webhookDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "credgate_webhook_delivery_duration_seconds",
			Help:    "How long the app's webhook took to answer a delivery (or to fail).",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
	}
	m.registry = prometheus.NewRegistry()
	m.registry.MustRegister(m.Collectors()...)
	return m
}

// AlsoExport adds collectors of the process's own (credgate's health) to
// what the OTLP export sends, beside the metrics' own.
func (m *Metrics) AlsoExport(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.registry.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Collectors are what to register with a Prometheus registry.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.connectionDuration, m.refreshes, m.tokenReads, m.egress, m.statesCleaned, m.decisions, m.identity,
		m.webhooks, m.webhookDuration}
}

// Prepare creates every series a dashboard or an alert divides at zero,
// for each platform: connections by arm and outcome with every failure
// code of the arm, declines, renewals by outcome, token reads. The first
// connection, failure or renewal after a start is then an increase a
// rate can see, rather than a series that appears already counted (which
// rate() and increase() never count: the first failure of each code
// would vanish from the success rate, again after every restart).
func (m *Metrics) Prepare(platforms []string) {
	for _, p := range platforms {
		for arm, codes := range map[flags.Arm][]string{flags.ArmNew: newFlowCodes(), flags.ArmLegacy: legacyCodes()} {
			flow := string(arm)
			m.connections.WithLabelValues(p, flow, Success, "")
			m.connections.WithLabelValues(p, flow, Declined, string(oauth.CodeAccessDenied))
			for _, code := range codes {
				m.connections.WithLabelValues(p, flow, Failure, code)
			}
		}
		for _, outcome := range RefreshOutcomes {
			m.refreshes.WithLabelValues(p, outcome)
		}
		m.tokenReads.WithLabelValues(p, Success)
		// The decision an unrecognised user gets, so that its rate is
		// right from the first such request.
		m.decisions.WithLabelValues(p, string(flags.ArmLegacy), string(flags.ReasonNoIdentity))
	}
}

// PrepareTokenReads creates the token API's outcome series (its error
// codes) at zero for each platform.
func (m *Metrics) PrepareTokenReads(platforms, outcomes []string) {
	for _, p := range platforms {
		for _, o := range outcomes {
			m.tokenReads.WithLabelValues(p, o)
		}
	}
}

// PrepareEgress creates the egress proxy's series (its status classes
// and failure codes) at zero for each platform.
func (m *Metrics) PrepareEgress(platforms, classes []string) {
	for _, p := range platforms {
		for _, c := range classes {
			m.egress.WithLabelValues(p, c)
		}
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

// PrepareWebhooks creates every webhook delivery series at zero: events
// and outcomes are the closed sets of each.
func (m *Metrics) PrepareWebhooks(events, outcomes []string) {
	for _, e := range events {
		for _, o := range outcomes {
			m.webhooks.WithLabelValues(e, o)
		}
	}
}

// WebhookDelivery counts one delivery attempt of an event.
func (m *Metrics) WebhookDelivery(event, outcome string, took time.Duration) {
	m.webhooks.WithLabelValues(event, outcome).Inc()
	m.webhookDuration.Observe(took.Seconds())
}

// Identity counts one identity outcome at route.
func (m *Metrics) Identity(route, result string) {
	m.identity.WithLabelValues(route, result).Inc()
}

// Connection counts a finished connection; errorCode is "" on success,
// and decides the outcome (Outcome). A duration of zero (unknown) is not
// observed.
func (m *Metrics) Connection(platform string, arm flags.Arm, errorCode string, d time.Duration) {
	m.connections.WithLabelValues(platform, string(arm), Outcome(errorCode), errorCode).Inc()
	if d > 0 {
		m.connectionDuration.WithLabelValues(platform, string(arm)).Observe(d.Seconds())
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
func (m *Metrics) Decision(platform string, arm flags.Arm, reason flags.Reason) {
	m.decisions.WithLabelValues(platform, string(arm), string(reason)).Inc()
}
