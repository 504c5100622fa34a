package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/sandbox"
)

// promVector evaluates expr at Prometheus and returns each series'
// value by the given labels joined with "/".
func promVector(t *testing.T, promURL, expr string, by ...string) map[string]float64 {
	t.Helper()
	return promVectorAt(t, promURL, time.Time{}, expr, by...)
}

// promVectorAt is promVector evaluated at a given instant (zero: now):
// two queries compared with each other must see the same samples.
func promVectorAt(t *testing.T, promURL string, at time.Time, expr string, by ...string) map[string]float64 {
	t.Helper()
	q := "/api/v1/query?query=" + url.QueryEscape(expr)
	if !at.IsZero() {
		q += fmt.Sprintf("&time=%.3f", float64(at.UnixMilli())/1000)
	}
	resp, err := http.Get(promURL + q)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Status != "success" {
		t.Fatalf("%s: %s %v %s", expr, out.Status, err, out.Error)
	}
	got := map[string]float64{}
	for _, r := range out.Data.Result {
		var key []string
		for _, l := range by {
			key = append(key, r.Metric[l])
		}
		v, _ := strconv.ParseFloat(fmt.Sprint(r.Value[1]), 64)
		got[strings.Join(key, "/")] = v
	}
	return got
}

// panelExpr is the first expression of the dashboard panel whose title
// starts with title.
func panelExpr(t *testing.T, title string) string {
	t.Helper()
	raw, err := os.ReadFile("../dashboards/credgate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		if strings.HasPrefix(p.Title, title) && len(p.Targets) > 0 {
			return p.Targets[0].Expr
		}
	}
	t.Fatalf("no dashboard panel %q", title)
	return ""
}

// With Prometheus scraping from before the first flow, the dashboard's
// success rate per platform and arm equals the audit log's (report) for
// the same flows, on both arms: successes, failures of every kind (the
// platform down, a forged error, the app failing, the app's failure
// redirect) and declines, which both leave out of the rate and show
// apart. Before issue 25 the first failure of each code never reached
// the rate, and the legacy arm was in /metrics only.
func TestDashboardRatesEqualTheAuditLogs(t *testing.T) {
	// 0 % with the kill switch on: the app's connect route keeps everyone
	// on the app, and credgate's own start route still starts flows
	// (the kill switch would stop those too).
	flagsFile := filepath.Join(t.TempDir(), "flags.json")
	setRollout(t, flagsFile, true, 0)
	// No background renewals: the renewals compared are the token API's,
	// all in before the audit log is read.
	h := newHarness(t, harnessOptions{metrics: true, legacyRedirect: true, flagsFile: flagsFile, globalOptions: "background off",
		tokenAPI: "service_token " + serviceToken, extraSite: "legacy_start /api/{platform}/connect"})
	promURL := startPrometheus(t, strings.TrimPrefix(strings.TrimSuffix(h.metricsURL, "/metrics"), "http://"))
	// Scraped at zero before any flow.
	deadline := time.Now().Add(20 * time.Second)
	for len(promVector(t, promURL, `credgate_connections_total{platform="twitter", outcome="failure", error="provider_unavailable"} == 0`, "flow")) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("not scraped at zero: up %v; %v", promVector(t, promURL, `up`, "instance"),
				promVector(t, promURL, `credgate_connections_total{platform="twitter"}`, "flow", "outcome", "error"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)

	// The new arm: 2 successes, 2 with the platform down, 1 forged
	// error, 1 decline.
	h.connect(alice, "twitter")
	h.connect(bob, "twitter")
	h.sandbox.SetFault("twitter."+sandbox.EndpointToken, sandbox.Fault{ErrorRate: 1})
	for i := 1; i <= 2; i++ {
		if loc := h.connect(userN(i), "twitter"); !strings.Contains(loc, "oauth_error=") {
			t.Fatalf("a connect with the platform down: %s", loc)
		}
	}
	h.sandbox.SetFault("twitter."+sandbox.EndpointToken, sandbox.Fault{})
	for i, tail := range []string{"&error=server_error", "&error=access_denied"} {
		user := userN(10 + i)
		providerURL, cookie := h.startFlow(user, "twitter", "/settings")
		u, _ := url.Parse(providerURL)
		h.callback("/api/auth/oauth/twitter/callback?state="+url.QueryEscape(u.Query().Get("state"))+tail, cookie, user)
	}
	// The legacy arm, through the app's connect route: 3 successes, the
	// app failing once (500) and reporting a failure once (redirect), 1
	// decline; and junk that began no flow.
	for i, tail := range []string{"&code=c", "&code=c", "&code=c", "&code=c&stub_status=500",
		"&code=c&stub_redirect=" + url.QueryEscape("/settings?error=token"), "&error=access_denied"} {
		state := fmt.Sprintf("app-state-%d", i)
		if resp, _ := h.do("GET", "/api/twitter/connect?app_state="+state, userN(20+i), nil); resp.StatusCode != http.StatusFound {
			t.Fatalf("the app's connect route: %d", resp.StatusCode)
		}
		h.do("GET", "/api/twitter/callback?state="+state+tail, "", nil)
	}
	h.do("GET", "/api/twitter/callback?state=junk&code=c&stub_status=500", "", nil)
	// Renewals: alice's and bob's tokens near expiry, the platform down
	// for bob's.
	h.sandbox.Clock().Advance(117 * time.Minute)
	if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusOK {
		t.Fatalf("a renewal: %d %s", code, body)
	}
	h.sandbox.SetFault("twitter."+sandbox.EndpointToken, sandbox.Fault{ErrorRate: 1})
	// (Its token, still valid for a few minutes, is served all the same.)
	h.fetchToken(h.internal, bob, "twitter", serviceToken)
	h.sandbox.SetFault("twitter."+sandbox.EndpointToken, sandbox.Fault{})

	// The audit log's view, as report and verify read it.
	r, err := report.Build(context.Background(), pgtest.Pool(t, h.db), time.Now().Add(time.Minute), time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	audit := map[string]report.Rate{}
	for _, x := range r.Connections {
		audit[x.Platform+"/"+x.Flow] = x
	}
	for key, want := range map[string][3]int64{"twitter/new": {2, 3, 1}, "twitter/legacy": {3, 2, 1}} {
		if a := audit[key]; a.Success != want[0] || a.Failed != want[1] || a.Declined != want[2] {
			t.Fatalf("audit %s: %+v, want %d successes, %d failures, %d declined", key, a, want[0], want[1], want[2])
		}
	}

	// Prometheus' view, once it has scraped the last flow.
	counts := `sum by (platform, flow, outcome) (increase(credgate_connections_total[10m]))`
	waitUntil(t, 30*time.Second, func() bool {
		v := promVector(t, promURL, counts, "platform", "flow", "outcome")
		return math.Round(v["twitter/legacy/declined"]) == 1 && math.Round(v["twitter/new/declined"]) == 1 &&
			math.Round(v["twitter/legacy/failure"]) == 2 && math.Round(v["twitter/new/failure"]) == 3
	})
	rates := promVector(t, promURL, panelExpr(t, "Connection success rate"), "platform", "flow")
	for key, a := range audit {
		if got := rates[key]; math.Abs(got-a.Rate) > 0.001 {
			t.Errorf("%s: the dashboard's success rate %.4f, the audit log's %.4f (%d of %d)", key, got, a.Rate, a.Success, a.Success+a.Failed)
		}
	}
	var renewals report.Rate
	for _, x := range r.Refreshes {
		if x.Platform == "twitter" {
			renewals = x
		}
	}
	if renewals.Success != 1 || renewals.Failed < 1 {
		t.Fatalf("audit renewals: %+v, want 1 success and the failure", renewals)
	}
	var seen map[string]float64
	deadline = time.Now().Add(30 * time.Second)
	for {
		seen = promVector(t, promURL, `sum by (outcome) (increase(credgate_refresh_total{platform="twitter"}[10m]))`, "outcome")
		if math.Round(seen["success"]) == float64(renewals.Success) && math.Round(seen["failure"]) == float64(renewals.Failed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("renewals at Prometheus %v, in the audit log %+v", seen, renewals)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := promVector(t, promURL, panelExpr(t, "Token refresh success rate"), "platform")["twitter"]; math.Abs(got-renewals.Rate) > 0.001 {
		t.Errorf("renewals: the dashboard's success rate %.4f, the audit log's %.4f", got, renewals.Rate)
	}
	// Both at one instant: a scrape between two queries each evaluated
	// at its own "now" moved one rate and not the other.
	at := time.Now()
	declined := promVectorAt(t, promURL, at, panelExpr(t, "Declined at the consent screen"), "platform", "flow")
	errs := promVectorAt(t, promURL, at, `sum by (platform, flow) (`+panelExpr(t, "Errors by platform")+`)`, "platform", "flow")
	for key, a := range audit {
		// Rates over the same samples: their ratio is the counts'.
		if d, e := declined[key], errs[key]; e == 0 || math.Abs(d/e-float64(a.Declined)/float64(a.Failed)) > 0.001 {
			t.Errorf("%s: declines %.4f and errors %.4f per second, the audit log's %d and %d", key, d, e, a.Declined, a.Failed)
		}
	}
}
