package telemetry_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/credgate/credgate/telemetry"
)

func TestStatusClassKeeps503Apart(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]string{0: "2xx", 200: "2xx", 204: "2xx", 302: "3xx", 401: "4xx", 404: "4xx",
		499: "4xx", 500: "5xx", 502: "5xx", 503: "503", 504: "5xx"} {
		if got := telemetry.StatusClass(status); got != want {
			t.Errorf("StatusClass(%d) = %q, want %q", status, got, want)
		}
	}
}

// Every route × class and every decrypt-failure series exists at zero
// before anything is counted, so a rate sees the first 503.
func TestHealthStartsEverySeriesAtZero(t *testing.T) {
	t.Parallel()
	h := telemetry.NewHealth()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h.Collectors()...)
	if n, want := testutil.CollectAndCount(reg, "credgate_responses_total"), len(telemetry.Routes)*5+1; n != want {
		t.Errorf("%d response series, want %d (routes × 5 classes, and egress proxied)", n, want)
	}
	if n := testutil.CollectAndCount(reg, "credgate_decrypt_failures_total"); n != len(telemetry.DecryptVias) {
		t.Errorf("%d decrypt-failure series, want %d", n, len(telemetry.DecryptVias))
	}
	h.Response(telemetry.RouteStatus, telemetry.StatusClass(503))
	h.DecryptFailed(telemetry.ViaEgress)
	want := `
# HELP credgate_decrypt_failures_total Stored credentials that did not decrypt with the configured keys (a missing or wrong key, a tampered blob), by where they were read (token_api, egress, disconnect, refresh, health_check).
# TYPE credgate_decrypt_failures_total counter
credgate_decrypt_failures_total{via="disconnect"} 0
credgate_decrypt_failures_total{via="egress"} 1
credgate_decrypt_failures_total{via="health_check"} 0
credgate_decrypt_failures_total{via="refresh"} 0
credgate_decrypt_failures_total{via="token_api"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "credgate_decrypt_failures_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "credgate_responses_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			want := 0.0
			if labels["route"] == telemetry.RouteStatus && labels["status_class"] == telemetry.Status503 {
				want = 1
			}
			if got := m.GetCounter().GetValue(); got != want {
				t.Errorf("credgate_responses_total%v = %v, want %v", labels, got, want)
			}
		}
	}
}
