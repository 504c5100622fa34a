package caddymodule

import (
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/backend"
	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// healthClasses are the status classes every route's series has.
var healthClasses = []string{telemetry.Status2xx, telemetry.Status3xx, telemetry.Status4xx, telemetry.Status5xx, telemetry.Status503}

// credgate's own health on /metrics: every route × status class and every
// decrypt-failure series is there at zero before the first request, the
// pool's statistics and the process's memory are there once (Caddy's own
// Go and process collectors), and answers move the series of their route
// and class: a platform's answer through egress as proxied, a blob that
// does not open as a 5xx of its route and a decrypt failure.
func TestHealthMetricsOnCaddysEndpoint(t *testing.T) {
	h := newHarness(t, harnessOptions{metrics: true, tokenAPI: "service_token " + serviceToken, egress: "service_token " + serviceToken})
	before := h.scrape()
	for _, route := range telemetry.Routes {
		for _, class := range healthClasses {
			got := metricValue(before, "credgate_responses_total", `route="`+route+`"`, `status_class="`+class+`"`)
			// The harness's readiness probes asked for the status route
			// without a user (401); nothing else has been asked.
			want := 0.0
			if route == telemetry.RouteStatus && class == telemetry.Status4xx {
				want = got
			}
			if got < 0 || got != want {
				t.Errorf("credgate_responses_total{route=%q,status_class=%q} = %v before any request, want %v", route, class, got, want)
			}
		}
	}
	if got := metricValue(before, "credgate_responses_total", `route="egress"`, `status_class="proxied"`); got != 0 {
		t.Errorf("egress proxied = %v before any call, want 0", got)
	}
	for _, via := range telemetry.DecryptVias {
		if got := metricValue(before, "credgate_decrypt_failures_total", `via="`+via+`"`); got != 0 {
			t.Errorf("credgate_decrypt_failures_total{via=%q} = %v, want 0", via, got)
		}
	}
	if got := metricValue(before, "credgate_storage_available"); got != 1 {
		t.Errorf("credgate_storage_available = %v, want 1", got)
	}
	if got := metricValue(before, "credgate_db_pool_max_conns"); got < 8 {
		t.Errorf("credgate_db_pool_max_conns = %v, want the pool's limit (at least 8)", got)
	}
	// Process memory comes from Caddy's registry, once: credgate must not
	// register a second Go or process collector.
	for _, family := range []string{"process_resident_memory_bytes", "go_memstats_heap_inuse_bytes"} {
		if got := metricValue(before, family); got <= 0 {
			t.Errorf("%s = %v, want the process's memory", family, got)
		}
		if n := strings.Count(before, "# TYPE "+family+" "); n != 1 {
			t.Errorf("%s is described %d times, want once", family, n)
		}
	}

	// The new flow (start and callback answer redirects), the status
	// route, the token API (one read, one for a user who never
	// connected), egress (the platform's 200 and 404, passed through).
	h.connect(alice, "twitter")
	h.connect(alice, "linkedin")
	if resp, body := h.do("GET", "/api/credentials/status", alice, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
	if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusOK {
		t.Fatalf("token: %d %s", code, body)
	}
	if code, _, body := h.fetchToken(h.internal, bob, "twitter", serviceToken); code != http.StatusNotFound {
		t.Fatalf("token of a user who never connected: %d %s", code, body)
	}
	if code, body := h.egressCall("GET", "/linkedin/v2/userinfo", alice, serviceToken, ""); code != http.StatusOK {
		t.Fatalf("egress: %d %s", code, body)
	}
	if code, body := h.egressCall("GET", "/linkedin/v2/no-such-endpoint", alice, serviceToken, ""); code != http.StatusNotFound {
		t.Fatalf("egress, the platform's 404: %d %s", code, body)
	}
	// Twitter's blob no longer opens: the token API and egress answer 500
	// decrypt_failed, once the token read above is no longer served again
	// (worker.RecentFor: the tampering happened behind credgate's back).
	pgtest.Exec(t, h.db, `UPDATE social_accounts SET credentials_encrypted = `+pgtest.TamperedBlob+`
		WHERE platform = 'twitter'`)
	h.sandbox.Clock().Advance(worker.RecentFor)
	if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusInternalServerError || errorCode(body) != "decrypt_failed" {
		t.Fatalf("token of an undecryptable account: %d %s", code, body)
	}
	if code, body := h.egressCall("GET", "/twitter/2/users/me", alice, serviceToken, ""); code != http.StatusInternalServerError || errorCode([]byte(body)) != "decrypt_failed" {
		t.Fatalf("egress with an undecryptable account: %d %s", code, body)
	}
	// The health check finds it (once until the row changes), and the user
	// disconnects it anyway (wiped, not revocable): counted too.
	for range 2 {
		if resp, body := h.do("GET", "/api/credentials/health-check", alice, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("health-check: %d %s", resp.StatusCode, body)
		}
	}
	if resp, body := h.do("DELETE", "/api/credentials/twitter/disconnect", alice, map[string]string{"Origin": h.origin}); resp.StatusCode != http.StatusOK {
		t.Fatalf("disconnecting an undecryptable account: %d %s", resp.StatusCode, body)
	}

	after := h.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"credgate_responses_total", []string{`route="start"`, `status_class="3xx"`}, 2},
		{"credgate_responses_total", []string{`route="callback"`, `status_class="3xx"`}, 2},
		{"credgate_responses_total", []string{`route="status"`, `status_class="2xx"`}, 1},
		{"credgate_responses_total", []string{`route="token"`, `status_class="2xx"`}, 1},
		{"credgate_responses_total", []string{`route="token"`, `status_class="4xx"`}, 1},
		{"credgate_responses_total", []string{`route="token"`, `status_class="5xx"`}, 1},
		{"credgate_responses_total", []string{`route="egress"`, `status_class="proxied"`}, 2},
		{"credgate_responses_total", []string{`route="egress"`, `status_class="4xx"`}, 0},
		{"credgate_responses_total", []string{`route="egress"`, `status_class="5xx"`}, 1},
		{"credgate_responses_total", []string{`status_class="503"`}, 0},
		{"credgate_decrypt_failures_total", []string{`via="token_api"`}, 1},
		{"credgate_decrypt_failures_total", []string{`via="egress"`}, 1},
		{"credgate_decrypt_failures_total", []string{`via="disconnect"`}, 1},
		{"credgate_decrypt_failures_total", []string{`via="health_check"`}, 1},
		{"credgate_responses_total", []string{`route="disconnect"`, `status_class="2xx"`}, 1},
	} {
		if got := metricValue(after, c.name, c.labels...) - metricValue(before, c.name, c.labels...); got != c.delta {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.delta)
		}
	}
	if got := metricValue(after, "credgate_db_pool_acquires_total") - metricValue(before, "credgate_db_pool_acquires_total"); got < 10 {
		t.Errorf("credgate_db_pool_acquires_total moved by %v over two connects and five reads, want at least 10", got)
	}
	acquired, total, maxConns := metricValue(after, "credgate_db_pool_acquired_conns"), metricValue(after, "credgate_db_pool_total_conns"), metricValue(after, "credgate_db_pool_max_conns")
	if acquired < 0 || total < 1 || acquired > total || total > maxConns {
		t.Errorf("pool: %v acquired, %v total, %v max", acquired, total, maxConns)
	}
	for _, name := range []string{"credgate_db_pool_idle_conns", "credgate_db_pool_constructing_conns", "credgate_db_pool_acquire_seconds_total",
		"credgate_db_pool_empty_acquires_total", "credgate_db_pool_empty_acquire_wait_seconds_total", "credgate_db_pool_canceled_acquires_total"} {
		if metricValue(after, name) < 0 {
			t.Errorf("%s is missing", name)
		}
	}
	if got := metricValue(after, "credgate_db_pool_new_conns_total"); got < 1 {
		t.Errorf("credgate_db_pool_new_conns_total = %v, want the connections opened", got)
	}
	// Closed label sets only: 12 routes × 5 classes, plus egress proxied.
	series := 0
	routes := strings.Join(telemetry.Routes, "|")
	valid := regexp.MustCompile(`^credgate_responses_total\{route="(` + routes + `)",status_class="(2xx|3xx|4xx|5xx|503)"\} `)
	for _, line := range strings.Split(after, "\n") {
		if !strings.HasPrefix(line, "credgate_responses_total{") {
			continue
		}
		series++
		if !valid.MatchString(line) && !strings.HasPrefix(line, `credgate_responses_total{route="egress",status_class="proxied"} `) {
			t.Errorf("a series outside the closed sets: %s", line)
		}
	}
	if want := len(telemetry.Routes)*len(healthClasses) + 1; series != want {
		t.Errorf("%d credgate_responses_total series, want %d", series, want)
	}
}

// A 503 credgate answers because its database is down moves the route's
// 503 series, and nothing else of 5xx; credgate_storage_available says
// so within the database watch's second, and again when the database is
// back.
func TestA503FromCredgateCountsAs503(t *testing.T) {
	db := pgtest.Database(t)
	proxy := pgtest.NewServerProxy(t)
	proxy.Up(t)
	h := newHarness(t, harnessOptions{databaseURL: proxy.Via(t, db), metrics: true})
	h.db = db
	waitUntil(t, 10*time.Second, func() bool { return metricValue(h.scrape(), "credgate_storage_available") == 1 })
	before := h.scrape()

	proxy.Down()
	unavailable := 0
	status := func() int {
		resp, body := h.do("GET", "/api/credentials/status", alice, nil)
		if resp.StatusCode == http.StatusServiceUnavailable {
			unavailable++
			if errorCode(body) != "unavailable" {
				t.Errorf("503 with code %q", errorCode(body))
			}
		}
		return resp.StatusCode
	}
	waitUntil(t, 15*time.Second, func() bool { return status() == http.StatusServiceUnavailable })
	for range 2 {
		if code := status(); code != http.StatusServiceUnavailable {
			t.Fatalf("status with the database down: %d", code)
		}
	}
	during := h.scrape()
	if got := metricValue(during, "credgate_responses_total", `route="status"`, `status_class="503"`) -
		metricValue(before, "credgate_responses_total", `route="status"`, `status_class="503"`); got != float64(unavailable) {
		t.Errorf("the status route's 503 series moved by %v, want %d", got, unavailable)
	}
	if got := metricValue(during, "credgate_responses_total", `status_class="5xx"`) - metricValue(before, "credgate_responses_total", `status_class="5xx"`); got != 0 {
		t.Errorf("the 5xx series moved by %v: a 503 is counted apart", got)
	}
	// The database watch notices within about a second (the first 503s
	// may come from a query that failed before it did).
	waitUntil(t, 10*time.Second, func() bool { return metricValue(h.scrape(), "credgate_storage_available") == 0 })

	proxy.Up(t)
	waitUntil(t, 15*time.Second, func() bool { return status() == http.StatusOK })
	if got := metricValue(h.scrape(), "credgate_storage_available"); got != 1 {
		t.Errorf("credgate_storage_available = %v with the database back, want 1", got)
	}
}

// Every route gateway/routes.go lists has a route label of its own (the token
// API's path on the public site is "other"): a route added there without
// one fails here.
func TestEveryRouteHasARouteLabel(t *testing.T) {
	src, err := os.ReadFile("../gateway/routes.go")
	if err != nil {
		t.Fatal(err)
	}
	listed := regexp.MustCompile(`(?m)^//\t(GET|POST|DELETE|\*)\s+(/\S+)`).FindAllStringSubmatch(string(src), -1)
	if len(listed) < 9 {
		t.Fatalf("found %d routes in routes.go's list, want its whole table", len(listed))
	}
	g := &gateway.Gateway{}
	seen := map[string]string{}
	for _, m := range listed {
		method, path := m[1], strings.ReplaceAll(m[2], "{platform}", "twitter")
		if method == "*" {
			method = http.MethodGet
		}
		path = strings.ReplaceAll(path, "…", "u/twitter/token")
		if g.Route(method, path) == nil {
			t.Errorf("%s %s: routes.go does not route it", method, path)
			continue
		}
		span, _, _ := gateway.RouteSpan(path)
		label := routeLabel(span, path)
		if strings.HasPrefix(path, backend.TokenRoutePrefix) {
			if label != telemetry.RouteOther {
				t.Errorf("%s: label %q, want other", path, label)
			}
			continue
		}
		if label == telemetry.RouteOther {
			t.Errorf("%s %s has no route label", method, path)
		}
		if other, dup := seen[label]; dup {
			t.Errorf("%s and %s share the route label %q", other, path, label)
		}
		seen[label] = path
	}
	// The internal listener's routes are named by their spans.
	for span, want := range map[string]string{"credgate.token.read": telemetry.RouteToken, "credgate.egress": telemetry.RouteEgress} {
		if got := routeLabel(span, "/anything"); got != want {
			t.Errorf("%s: %q, want %q", span, got, want)
		}
	}
}

// The token API's and egress's refusals before their traced part (no
// service token, a malformed request) count on their route too, once
// each; an answer from the traced part is not counted twice.
func TestEarlyRefusalsOfTheTokenAPIAndEgressCount(t *testing.T) {
	h := newHarness(t, harnessOptions{metrics: true, tokenAPI: "service_token " + serviceToken, egress: "service_token " + serviceToken})
	count := func(route, class string) float64 {
		return metricValue(h.scrape(), "credgate_responses_total", `route="`+route+`"`, `status_class="`+class+`"`)
	}
	h.connect(alice, "twitter")
	before4, before2 := count(telemetry.RouteToken, telemetry.Status4xx), count(telemetry.RouteToken, telemetry.Status2xx)
	if code, _, _ := h.fetchToken(h.internal, alice, "twitter", "wrong-token"); code != http.StatusUnauthorized {
		t.Fatalf("a wrong service token: %d", code)
	}
	if code, _, _ := h.fetchToken(h.internal, "not-a-uuid", "twitter", serviceToken); code != http.StatusBadRequest {
		t.Fatalf("a malformed user id: %d", code)
	}
	if code, _, _ := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusOK {
		t.Fatalf("a good read: %d", code)
	}
	if d := count(telemetry.RouteToken, telemetry.Status4xx) - before4; d != 2 {
		t.Errorf("token route 4xx moved by %v, want 2", d)
	}
	if d := count(telemetry.RouteToken, telemetry.Status2xx) - before2; d != 1 {
		t.Errorf("token route 2xx moved by %v, want 1 (counted once)", d)
	}
	before := count(telemetry.RouteEgress, telemetry.Status4xx)
	if code, _ := h.egressCall("POST", "/twitter/2/tweets", "not-a-uuid", serviceToken, `{}`); code != http.StatusBadRequest {
		t.Fatalf("egress with a malformed user: %d", code)
	}
	if code, _ := h.egressCall("POST", "/twitter/2/tweets", alice, "", `{}`); code != http.StatusUnauthorized {
		t.Fatalf("egress without a token: %d", code)
	}
	if d := count(telemetry.RouteEgress, telemetry.Status4xx) - before; d != 2 {
		t.Errorf("egress route 4xx moved by %v, want 2", d)
	}
}

// Every code tokenFailure answers with is in the closed set whose series
// start at zero (answer.TokenFailureCodes).
func TestTokenFailureCodesAreTheClosedSet(t *testing.T) {
	for _, err := range []error{vault.ErrNotConnected, worker.ErrNeedsReauth, worker.ErrAppRenews, worker.ErrExpiryUnknown,
		worker.ErrRenewalPending, &oauth.Error{Code: oauth.CodeInvalidGrant}} {
		if _, code, _ := answer.TokenFailure(err); !slices.Contains(answer.TokenFailureCodes, code) {
			t.Errorf("TokenFailure(%v) = %q, not in TokenFailureCodes", err, code)
		}
	}
	h := newHarness(t, harnessOptions{metrics: true, tokenAPI: "service_token " + serviceToken})
	body := h.scrape()
	for _, c := range []struct{ metric, label string }{
		{"credgate_token_reads_total", `outcome="renewal_pending"`},
		{"credgate_token_reads_total", `outcome="invalid_grant"`},
		{"credgate_egress_requests_total", `status_class="5xx"`},
		{"credgate_egress_requests_total", `status_class="decrypt_failed"`},
	} {
		if !regexp.MustCompile(`(?m)^` + c.metric + `\{[^}]*` + regexp.QuoteMeta(c.label) + `[^}]*platform="twitter"[^}]*\} 0$|^` + c.metric + `\{[^}]*platform="twitter"[^}]*` + regexp.QuoteMeta(c.label) + `[^}]*\} 0$`).MatchString(body) {
			t.Errorf("%s{%s, platform=twitter} is not at zero from the start", c.metric, c.label)
		}
	}
}
