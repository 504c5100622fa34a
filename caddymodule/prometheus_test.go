package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/credgate/credgate/internal/pgtest"
)

// The shipped dashboard and alerting rules, run by a real Prometheus
// scraping a real Caddy: every PromQL expression in the dashboard
// returns data after flows on both arms, the rules load, and their unit
// test (a synthetic regression fires, healthy series stay quiet) passes.
// Debian's prometheus package provides both binaries; .ci/run installs
// it. Missing binaries fail the test: they are never a reason to skip.
func TestDashboardAndRulesAgainstARealPrometheus(t *testing.T) {
	for _, bin := range []string{"prometheus", "promtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (apt-get install prometheus; .ci/run does it): %v", bin, err)
		}
	}
	for _, args := range [][]string{{"check", "rules", "../dashboards/credgate.rules.yml"}, {"test", "rules", "../dashboards/credgate.rules.test.yml"}} {
		if out, err := exec.Command("promtool", args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	h := newHarness(t, harnessOptions{metrics: true, legacyRedirect: true, tokenAPI: "service_token " + serviceToken,
		extraSite: "legacy_start /api/{platform}/connect", globalOptions: "guard"})
	promURL := startPrometheus(t, strings.TrimPrefix(strings.TrimSuffix(h.metricsURL, "/metrics"), "http://"))
	query := func(expr string) (int, error) {
		resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var out struct {
			Status string
			Error  string
			Data   struct{ Result []json.RawMessage }
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Status != "success" {
			return 0, fmt.Errorf("%s: %v %s", out.Status, err, out.Error)
		}
		return len(out.Data.Result), nil
	}
	waitUntil(t, 20*time.Second, func() bool { n, _ := query(`credgate_flag_provider_ready`); return n > 0 })

	// Traffic on both arms while Prometheus scrapes, in two rounds: a
	// series Prometheus first sees already counted has no rate until it
	// moves again.
	traffic := func() {
		h.connect(alice, "twitter")
		h.connect(bob, "twitter")
		providerURL, cookie := h.startFlow(carol, "twitter", "/settings")
		u, _ := url.Parse(providerURL)
		h.callback(h.origin+"/api/auth/oauth/twitter/callback?error=access_denied&state="+url.QueryEscape(u.Query().Get("state")), cookie, carol)
		ok, failing := "app-"+uuid.NewString(), "app-"+uuid.NewString()
		h.beginAppFlow(carol, "twitter", ok)
		h.beginAppFlow(carol, "twitter", failing)
		h.do("GET", "/api/twitter/callback?code=c&state="+ok, "", nil)
		h.do("GET", "/api/twitter/callback?code=c&state="+failing+"&stub_status=500", "", nil)
		h.do("GET", "/api/twitter/connect", alice, nil)
		h.sandbox.Clock().Advance(117 * time.Minute)
		if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusOK {
			t.Fatalf("token: %d %s", code, body)
		}
		pgtest.Exec(t, h.db, `INSERT INTO oauth_states (state_hash, user_id, platform, redirect_uri, expires_at)
			VALUES (sha256(gen_random_uuid()::text::bytea), gen_random_uuid(), 'twitter', 'http://x/cb', now() - interval '1 minute')`)
		h.do("POST", "/api/maintenance/cleanup", "", map[string]string{"Authorization": "Bearer " + adminToken})
	}
	traffic()
	// The database gauges are cached for 10 s: wait until Prometheus has
	// scraped them with the accounts in.
	waitUntil(t, 40*time.Second, func() bool {
		n, _ := query(`credgate_refresh_total and on() credgate_accounts{status="connected"} >= 2`)
		return n > 0
	})
	traffic()
	waitUntil(t, 60*time.Second, func() bool {
		n, _ := query(`sum(rate(credgate_refresh_total[5m])) > 0
			and on() sum(rate(credgate_connections_total{flow="new"}[5m])) > 0
			and on() sum(rate(credgate_connections_total{flow="legacy"}[5m])) > 0
			and on() count_over_time(credgate_flag_provider_ready[1m]) > 4`)
		return n > 0
	})

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
		t.Fatalf("dashboard JSON: %v", err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			exprs++
			n, err := query(target.Expr)
			if err != nil || n == 0 {
				t.Errorf("panel %q: %s returned %d series (%v)", p.Title, target.Expr, n, err)
			}
		}
	}
	if exprs < 10 {
		t.Errorf("only %d expressions in the dashboard", exprs)
	}
	// The arms side by side: both are in the success-rate panel's answer.
	for _, flow := range []string{"new", "legacy"} {
		if n, _ := query(`sum by (platform, flow) (rate(credgate_connections_total{flow="` + flow + `"}[5m])) > 0`); n == 0 {
			t.Errorf("no %s-arm traffic visible to Prometheus", flow)
		}
	}
}

const carol = "33333333-3333-4333-8333-333333333333"

// startPrometheus runs Prometheus scraping target every second and
// returns its URL.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %s\nscrape_configs:\n  - job_name: credgate\n    static_configs:\n      - targets: ['%s']\n",
		mustAbs(t, "../dashboards/credgate.rules.yml"), target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	logs, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", out)
		}
	})
	base := "http://" + addr
	waitUntil(t, 20*time.Second, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return base
}

func mustAbs(t *testing.T, p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// Every alert in the rules has a promtool case in which it fires and one
// in which it stays quiet: `promtool test rules` (run above and by the
// dashboard test) then covers every alert, credgate's own health too.
func TestEveryAlertHasAFiringAndAQuietCase(t *testing.T) {
	rules, err := os.ReadFile("../dashboards/credgate.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("../dashboards/credgate.rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`(?m)^\s*- alert: (\w+)\s*$`).FindAllStringSubmatch(string(rules), -1)
	if len(names) < 10 {
		t.Fatalf("only %d alerts found in the rules", len(names))
	}
	for _, n := range names {
		name := regexp.QuoteMeta(n[1])
		if !regexp.MustCompile(`alertname: ` + name + `\s*\n\s*exp_alerts:\s*\n\s*- `).Match(tests) {
			t.Errorf("%s has no promtool case in which it fires", n[1])
		}
		if !regexp.MustCompile(`alertname: ` + name + `\s*\n\s*exp_alerts: \[\]`).Match(tests) {
			t.Errorf("%s has no promtool case in which it stays quiet", n[1])
		}
	}
}
