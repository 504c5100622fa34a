package telemetry

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// Health is what an operator needs to know about credgate itself, apart
// from the flows it serves: how its own routes answer, and credentials
// whose stored blob does not open. Like Metrics, one Health lives for the
// whole process, so its counters keep counting across config reloads,
// and every series of its closed label sets exists at zero from the
// start (a rate sees the first 503, not a series that appears already
// counted).
type Health struct {
	responses       *prometheus.CounterVec
	decryptFailures *prometheus.CounterVec
}

// The route label of credgate's answers: one name per route credgate
// owns (gateway/routes.go lists them), the internal listener's two,
// and RouteOther for anything else credgate answers itself (the token
// API's path on the public site, always 404). The app's routes credgate
// watches (connect, the legacy callback) are the app's answers and are
// not counted, except a callback of credgate's own flow, which is
// RouteCallback wherever it arrives.
const (
	RouteCallback      = "callback"
	RouteStatus        = "status"
	RouteDisconnect    = "disconnect"
	RouteHealthCheck   = "health_check"
	RouteServiceHealth = "service_health"
	RouteCleanup       = "cleanup"
	RouteRollout       = "rollout"
	RouteRolloutResume = "rollout_resume"
	// RouteRolloutDecision is GET /api/credentials/rollout/<platform>,
	// a signed-in user's decision.
	RouteRolloutDecision = "rollout_decision"
	RouteToken           = "token"
	RouteEgress          = "egress"
	RouteOther           = "other"
)

// Routes is the closed set of the route label (RouteStart included).
var Routes = []string{RouteStart, RouteCallback, RouteStatus, RouteDisconnect, RouteHealthCheck, RouteServiceHealth,
	RouteCleanup, RouteRollout, RouteRolloutResume, RouteRolloutDecision, RouteToken, RouteEgress, RouteOther}

// Status classes of credgate's answers. 503 is its own class, apart from
// the other 5xx: credgate answers it when its storage is unavailable (or
// a platform did not renew a token), a 500 is a fault of its own. A
// platform's answer the egress proxy passed through is StatusProxied:
// it is the platform's status, not credgate's (credgate_egress_requests_total
// has its class).
const (
	Status2xx     = "2xx"
	Status3xx     = "3xx"
	Status4xx     = "4xx"
	Status5xx     = "5xx"
	Status503     = "503"
	StatusProxied = "proxied"
)

var statusClasses = []string{Status2xx, Status3xx, Status4xx, Status5xx, Status503}

// StatusClass is the status_class label of an answer with status (0, as
// net/http does, is 200).
func StatusClass(status int) string {
	switch {
	case status == http.StatusServiceUnavailable:
		return Status503
	case status >= 500:
		return Status5xx
	case status >= 400:
		return Status4xx
	case status >= 300:
		return Status3xx
	}
	return Status2xx
}

// Where a blob that does not open was met, as the via label spells it
// (the audit rows' details say the same).
const (
	ViaTokenAPI    = "token_api"
	ViaEgress      = "egress"
	ViaDisconnect  = "disconnect"
	ViaRefresh     = "refresh"
	ViaHealthCheck = "health_check"
)

// DecryptVias is the closed set of the via label.
var DecryptVias = []string{ViaTokenAPI, ViaEgress, ViaDisconnect, ViaRefresh, ViaHealthCheck}

// NewHealth returns the health counters with every series at zero.
func NewHealth() *Health {
	h := &Health{
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_responses_total",
			Help: "Answers credgate gave on its own routes, by route and status class (2xx, 3xx, 4xx, 5xx other than 503, 503; proxied: a platform's answer passed through by the egress proxy).",
		}, []string{"route", "status_class"}),
		decryptFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgate_decrypt_failures_total",
			Help: "Stored credentials that did not decrypt with the configured keys (a missing or wrong key, a tampered blob), by where they were read (token_api, egress, disconnect, refresh, health_check).",
		}, []string{"via"}),
	}
	for _, route := range Routes {
		for _, class := range statusClasses {
			h.responses.WithLabelValues(route, class)
		}
	}
	h.responses.WithLabelValues(RouteEgress, StatusProxied)
	for _, via := range DecryptVias {
		h.decryptFailures.WithLabelValues(via)
	}
	return h
}

// Collectors are what to register with a Prometheus registry.
func (h *Health) Collectors() []prometheus.Collector {
	return []prometheus.Collector{h.responses, h.decryptFailures}
}

// Response counts one answer credgate gave on route; class is
// StatusClass(status), or StatusProxied.
func (h *Health) Response(route, class string) {
	h.responses.WithLabelValues(route, class).Inc()
}

// DecryptFailed counts a blob that did not open, met via.
func (h *Health) DecryptFailed(via string) {
	h.decryptFailures.WithLabelValues(via).Inc()
}
