package telemetry_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/credgate/credgate/telemetry"
)

func TestMetricsCountByClosedLabels(t *testing.T) {
	t.Parallel()
	m := telemetry.New()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range m.Collectors() {
		reg.MustRegister(c)
	}
	m.Connection("twitter", telemetry.FlowNew, true, "", 3*time.Second)
	m.Connection("twitter", telemetry.FlowNew, false, "access_denied", 2*time.Second)
	m.Connection("twitter", telemetry.FlowLegacy, true, "", 0)
	m.Refresh("twitter", "success")
	m.TokenRead("twitter", "needs_reauth")
	m.StatesCleaned(3)
	m.StatesCleaned(0)
	m.Decision("twitter", "new", "split")
	want := `
# HELP credgate_connections_total Finished OAuth connections by platform, arm (new/legacy), outcome and stable error code.
# TYPE credgate_connections_total counter
credgate_connections_total{error="",flow="legacy",outcome="success",platform="twitter"} 1
credgate_connections_total{error="",flow="new",outcome="success",platform="twitter"} 1
credgate_connections_total{error="access_denied",flow="new",outcome="failure",platform="twitter"} 1
# HELP credgate_states_cleaned_total Expired OAuth states deleted.
# TYPE credgate_states_cleaned_total counter
credgate_states_cleaned_total 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "credgate_connections_total", "credgate_states_cleaned_total"); err != nil {
		t.Error(err)
	}
	// The legacy arm has no duration: credgate never sees its start.
	if n := testutil.CollectAndCount(reg, "credgate_connection_duration_seconds"); n != 1 {
		t.Errorf("%d duration series, want only the new arm's", n)
	}
}
