package telemetry_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
)

func TestMetricsCountByClosedLabels(t *testing.T) {
	t.Parallel()
	m := telemetry.New()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range m.Collectors() {
		reg.MustRegister(c)
	}
	m.Connection("twitter", flags.ArmNew, "", 3*time.Second)
	m.Connection("twitter", flags.ArmNew, "access_denied", 2*time.Second)
	m.Connection("twitter", flags.ArmNew, "invalid_grant", 2*time.Second)
	m.Connection("twitter", flags.ArmLegacy, "", 0)
	m.Refresh("twitter", "success")
	m.TokenRead("twitter", "needs_reauth")
	m.StatesCleaned(3)
	m.StatesCleaned(0)
	m.Decision("twitter", "new", "split")
	want := `
# HELP credgate_connections_total Finished OAuth connections by platform, arm (new/legacy), outcome (success, failure, declined) and stable error code.
# TYPE credgate_connections_total counter
credgate_connections_total{error="",flow="legacy",outcome="success",platform="twitter"} 1
credgate_connections_total{error="",flow="new",outcome="success",platform="twitter"} 1
credgate_connections_total{error="access_denied",flow="new",outcome="declined",platform="twitter"} 1
credgate_connections_total{error="invalid_grant",flow="new",outcome="failure",platform="twitter"} 1
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

// Prepare makes every series a rate divides exist at zero for the closed
// sets (platforms × arms × each arm's failure codes, declines, renewal
// outcomes), so the first failure of each code is an increase from 0.
func TestPrepareStartsEveryDividedSeriesAtZero(t *testing.T) {
	t.Parallel()
	m := telemetry.New()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range m.Collectors() {
		reg.MustRegister(c)
	}
	m.Prepare([]string{"twitter", "facebook"})
	for _, want := range []string{
		`credgate_connections_total{error="access_denied",flow="new",outcome="declined",platform="facebook"} 0`,
		`credgate_connections_total{error="invalid_grant",flow="new",outcome="failure",platform="twitter"} 0`,
		`credgate_connections_total{error="storage_unavailable",flow="new",outcome="failure",platform="twitter"} 0`,
		`credgate_connections_total{error="provider_unavailable",flow="new",outcome="failure",platform="facebook"} 0`,
		`credgate_connections_total{error="http_5xx",flow="legacy",outcome="failure",platform="twitter"} 0`,
		`credgate_connections_total{error="",flow="legacy",outcome="success",platform="facebook"} 0`,
		`credgate_refresh_total{outcome="needs_reauth",platform="twitter"} 0`,
		`credgate_refresh_total{outcome="failure",platform="facebook"} 0`,
	} {
		metric := want[:strings.Index(want, "{")]
		var b strings.Builder
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != metric {
				continue
			}
			for _, s := range f.GetMetric() {
				var labels []string
				for _, l := range s.GetLabel() {
					labels = append(labels, l.GetName()+"=\""+l.GetValue()+"\"")
				}
				fmt.Fprintf(&b, "%s{%s} %g\n", metric, strings.Join(labels, ","), s.GetCounter().GetValue())
			}
		}
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("missing at zero: %s", want)
		}
	}
	// An unknown error code is not among them: a failure series is
	// created for the closed set only.
	// Per platform: the new arm's success, decline, every platform code
	// but access_denied and storage_unavailable; the legacy arm's
	// success, decline, its four codes of the app's answer and every
	// platform code but access_denied (the error= on its callback).
	perPlatform := (1 + 1 + len(oauth.Codes()) - 1 + 1) + (1 + 1 + 4 + len(oauth.Codes()) - 1)
	if n := testutil.CollectAndCount(reg, "credgate_connections_total"); n != 2*perPlatform {
		t.Errorf("%d connection series, want %d", n, 2*perPlatform)
	}
}
