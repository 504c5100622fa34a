package caddymodule

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// scrape reads Caddy's Prometheus endpoint.
func (h *harness) scrape() string {
	h.t.Helper()
	resp, err := http.Get(h.metricsURL)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// metricValue sums the samples of name whose labels include every one in
// want (`key="value"` pairs); -1 when there is none.
func metricValue(body, name string, want ...string) float64 {
	total, found := 0.0, false
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value := "", rest
		if strings.HasPrefix(rest, "{") {
			end := strings.Index(rest, "}")
			labels, value = rest[1:end], rest[end+1:]
		}
		match := true
		for _, w := range want {
			match = match && strings.Contains(","+labels+",", ","+w+",")
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err == nil {
			total, found = total+v, true
		}
	}
	if !found {
		return -1
	}
	return total
}

// Flows on both arms show up on Caddy's /metrics with their arm, outcome
// and error code; so do the rollout decision, the token read and the
// database gauges.
func TestMetricsOnCaddysEndpointForBothArms(t *testing.T) {
	h := newHarness(t, harnessOptions{metrics: true, legacyRedirect: true, tokenAPI: "service_token " + serviceToken,
		extraSite: "legacy_start /api/{platform}/connect"})
	// New arm: one success, one refusal at the consent screen.
	h.connect(alice, "twitter")
	providerURL, cookie := h.startFlow(bob, "twitter", "/settings")
	u, _ := url.Parse(providerURL)
	denied := "/api/twitter/callback?error=access_denied&state=" + url.QueryEscape(u.Query().Get("state"))
	if resp, _ := h.callback(h.origin+denied, cookie, bob); resp.StatusCode != http.StatusFound {
		t.Fatalf("denied callback: %d", resp.StatusCode)
	}
	// Legacy arm: the app's own flows through its callback, one fine and
	// one the app fails.
	h.beginAppFlow(carol, "twitter", "app-state-1")
	h.beginAppFlow(carol, "twitter", "app-state-2")
	h.do("GET", "/api/twitter/callback?code=c&state=app-state-1", "", nil)
	h.do("GET", "/api/twitter/callback?code=c&state=app-state-2&stub_status=500", "", nil)
	// A rollout decision at the app's connect route (static 100 %).
	if resp, _ := h.do("GET", "/api/twitter/connect", alice, nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("connect route: %d", resp.StatusCode)
	}
	if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusOK {
		t.Fatalf("token: %d %s", code, body)
	}
	// A reloaded or replayed callback is refused, not a failed connection.
	h.do("GET", "/api/auth/oauth/twitter/callback?code=x&state="+url.QueryEscape(u.Query().Get("state")), bob, nil)

	body := h.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"credgate_connections_total", []string{`platform="twitter"`, `flow="new"`, `outcome="success"`, `error=""`}, 1},
		{"credgate_connections_total", []string{`platform="twitter"`, `flow="new"`, `outcome="declined"`, `error="access_denied"`}, 1},
		{"credgate_connections_total", []string{`platform="twitter"`, `flow="legacy"`, `outcome="success"`}, 1},
		{"credgate_connections_total", []string{`platform="twitter"`, `flow="legacy"`, `outcome="failure"`, `error="http_5xx"`}, 1},
		{"credgate_connection_duration_seconds_count", []string{`platform="twitter"`, `flow="new"`}, 2},
		{"credgate_connection_duration_seconds_count", []string{`flow="legacy"`}, 2},
		{"credgate_rollout_decisions_total", []string{`platform="twitter"`, `arm="new"`}, 1},
		{"credgate_token_reads_total", []string{`platform="twitter"`, `outcome="success"`}, 1},
		{"credgate_flag_provider_ready", nil, 1},
		{"credgate_accounts", []string{`platform="twitter"`, `status="connected"`}, 1},
		{"credgate_refresh_queue_jobs", []string{`status="pending"`}, 1},
		{"credgate_refresh_queue_jobs", []string{`status="dead"`}, 0},
		// Zeros are series too: an alert must see a jump from zero.
		{"credgate_accounts", []string{`platform="linkedin"`, `status="needs_reauth"`}, 0},
		{"credgate_connections_total", []string{`error="invalid_state"`}, -1},
	} {
		if got := metricValue(body, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Closed label sets: no user id, URL or token in any series.
	for _, leak := range []string{alice, bob, "app-state", "/api/", serviceToken} {
		if strings.Contains(body, leak) {
			for _, line := range strings.Split(body, "\n") {
				if strings.Contains(line, leak) {
					t.Errorf("/metrics contains %q: %s", leak, line)
				}
			}
		}
	}
	// Counters survive a config reload.
	h.load("legacy_start /api/{platform}/connect")
	if got := metricValue(h.scrape(), "credgate_connections_total", `flow="new"`, `outcome="success"`); got != 1 {
		t.Errorf("after a reload the new arm's successes read %v, want 1", got)
	}
}
