package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/sandbox"
)

// secondInstance provisions and starts another credgate app on the same
// database, outside the running Caddy config: a second replica in the
// same process, with its own rollout, outcome counter and guard.
func secondInstance(t *testing.T, db string, guardJSON string) *App {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	raw := fmt.Sprintf(`{"database_url": %q, "master_key": %q, "flags": {"provider": "static", "percent": 100},
		"background": "off", "guard": %s, "providers": {"linkedin": {"client_id": "x", "client_secret": "y", "redirect_url": "http://127.0.0.1:1/cb"}}}`,
		db, testKey(1), guardJSON)
	app := new(App)
	if err := json.Unmarshal([]byte(raw), app); err != nil {
		t.Fatal(err)
	}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		app.Stop()
		app.Cleanup()
		cancel()
	})
	return app
}

// The guard, through a real Caddy: a 20 % error rate at LinkedIn's token
// endpoint while the app's legacy flow stays healthy. It does not judge
// below the sample minimum; once there, it halts LinkedIn's new starts
// (Twitter's keep following the flag), in a second instance on the same
// database too; a flow started before the halt finishes on the new arm;
// the halt is audited, shown in service-health, the rollout route and
// the metrics; and a resume through the admin route clears it everywhere.
func TestGuardHaltsARegressionAndResumeClearsIt(t *testing.T) {
	h := newHarness(t, harnessOptions{legacyRedirect: true, metrics: true,
		extraSite:     "legacy_start /api/{platform}/connect\n",
		globalOptions: "guard {\n\t\t\tmin_samples 50\n\t\t\twindow 10m\n\t\t}"})
	app := currentApp(t)
	other := secondInstance(t, h.db, `{"min_samples": 50}`)
	admin := map[string]string{"Authorization": "Bearer " + adminToken}

	// The app's own LinkedIn callbacks: the legacy arm, healthy.
	for i := range 60 {
		h.beginAppFlow(userN(5000+i), "linkedin", fmt.Sprintf("app-state-%d", i))
		if resp, _ := h.do("GET", fmt.Sprintf("/api/linkedin/callback?state=app-state-%d&code=c", i), "", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("legacy callback: %d", resp.StatusCode)
		}
	}
	h.sandbox.SetFault("linkedin."+sandbox.EndpointToken, sandbox.Fault{ErrorRate: 0.2})

	// A flow started now, on the new arm, is finished after the halt.
	inFlight, inFlightCookie := h.newFlowViaLegacyStart(userN(9999), "linkedin")

	failed := 0
	connect := func(i int) {
		if loc := h.connect(userN(i), "linkedin"); strings.Contains(loc, "error=") {
			failed++
		}
	}
	// 49 new-arm outcomes: below the minimum, however bad.
	for i := range 49 {
		connect(i)
	}
	// A tick of the guard, now: it adds this instance's outcomes to the
	// window and judges (its loop does the same every second; waiting on
	// it with sleeps flaked on a loaded machine).
	tick := func() {
		t.Helper()
		if err := app.guard.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	tick()
	if app.halted("linkedin") {
		t.Fatalf("halted below the sample minimum (%d of 49 failed)", failed)
	}
	if failed == 0 {
		t.Fatal("the fault injected no failure")
	}
	// From 50 on it judges: at 20 % errors it halts within a few flows.
	flows := 49
	for !app.halted("linkedin") {
		if flows >= 200 {
			t.Fatalf("not halted after %d flows (%d failed)", flows, failed)
		}
		connect(flows)
		flows++
		tick()
	}
	t.Logf("halted after %d new-arm flows, %d failed", flows, failed)

	// New LinkedIn starts go to the app, Twitter's to the new flow.
	if h.legacyStartIsNew(userN(1), "linkedin") {
		t.Fatal("a LinkedIn start went to the new flow after the halt")
	}
	if !h.legacyStartIsNew(userN(1), "twitter") {
		t.Fatal("the halt of LinkedIn stopped Twitter")
	}
	// The other instance follows the latch.
	waitUntil(t, 5*time.Second, func() bool {
		return other.Rollout().Decide(context.Background(), userN(1), "linkedin").Reason == flags.ReasonGuardHalted
	})
	// The flow in progress finishes on the new arm.
	h.sandbox.SetFault("linkedin."+sandbox.EndpointToken, sandbox.Fault{})
	if resp, body := h.callback(inFlight, inFlightCookie, userN(9999)); resp.StatusCode != http.StatusFound || strings.Contains(resp.Header.Get("Location"), "error=") {
		t.Fatalf("the flow in progress: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}

	// Audited once, with the rates.
	var details map[string]any
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'rollout_halted' AND platform = 'linkedin'`); n != 1 {
		t.Fatalf("%d rollout_halted rows, want 1", n)
	}
	pool := app.pool
	if err := pool.QueryRow(context.Background(), `SELECT details FROM credential_audit_log WHERE action = 'rollout_halted'`).Scan(&details); err != nil {
		t.Fatal(err)
	}
	if details["new_samples"].(float64) < 50 || details["new_success"].(float64) >= 0.95 || details["legacy_samples"] != float64(60) || details["legacy_success"] != float64(1) {
		t.Fatalf("audit details: %v", details)
	}
	// service-health, the rollout route, the metric.
	resp, body := h.do("GET", "/api/credentials/service-health", "", admin)
	var health struct {
		Guard struct {
			Enabled bool     `json:"enabled"`
			Halted  []string `json:"halted"`
		} `json:"guard"`
	}
	json.Unmarshal(body, &health)
	if resp.StatusCode != http.StatusOK || !health.Guard.Enabled || len(health.Guard.Halted) != 1 || health.Guard.Halted[0] != "linkedin" {
		t.Fatalf("service-health: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do("GET", "/api/credentials/rollout", "", admin)
	var rollout struct {
		Platforms []guard.RolloutStatus `json:"platforms"`
	}
	json.Unmarshal(body, &rollout)
	var li *guard.RolloutStatus
	for i := range rollout.Platforms {
		if rollout.Platforms[i].Platform == "linkedin" {
			li = &rollout.Platforms[i]
		}
	}
	if resp.StatusCode != http.StatusOK || li == nil || !li.Halted || li.Flags == nil || li.Flags.NewPercent != 100 || !li.Flags.KillSwitchOn ||
		li.Guard.Legacy.Samples() != 60 || li.Guard.New.Samples() < 50 {
		t.Fatalf("rollout route: %d %s", resp.StatusCode, body)
	}
	if m := h.scrape(); !strings.Contains(m, `credgate_rollout_halted{platform="linkedin"} 1`) || !strings.Contains(m, `credgate_rollout_halted{platform="twitter"} 0`) {
		t.Fatal("credgate_rollout_halted does not show the halt")
	}

	// Resume through the admin route: cleared in both instances, audited.
	resp, body = h.doBody("POST", "/api/credentials/rollout/resume", `{"platform": "linkedin", "by": "oncall"}`, admin)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("resume: %d %s", resp.StatusCode, body)
	}
	waitUntil(t, 5*time.Second, func() bool { return h.legacyStartIsNew(userN(1), "linkedin") })
	waitUntil(t, 5*time.Second, func() bool {
		return other.Rollout().Decide(context.Background(), userN(1), "linkedin").Arm == flags.ArmNew
	})
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'rollout_resumed' AND platform = 'linkedin' AND details->>'by' = 'admin-route: oncall'`); n != 1 {
		t.Fatalf("%d rollout_resumed rows, want 1", n)
	}
	resp, body = h.doBody("POST", "/api/credentials/rollout/resume", `{"platform": "linkedin"}`, admin)
	if resp.StatusCode != http.StatusConflict || !bytes.Contains(body, []byte("not_halted")) {
		t.Fatalf("resuming again: %d %s", resp.StatusCode, body)
	}
	for _, bad := range []string{``, `{}`, `not json`} {
		if resp, body := h.doBody("POST", "/api/credentials/rollout/resume", bad, admin); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("resume with %q: %d %s", bad, resp.StatusCode, body)
		}
	}
	if resp, _ := h.doBody("POST", "/api/credentials/rollout/resume", `{"platform": "linkedin"}`, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("resume without the admin token: %d", resp.StatusCode)
	}
}

// Resuming a platform credgate does not serve answers 404
// unknown_platform naming it, not 409 not_halted, and writes nothing; a
// configured platform that is not halted is still 409; a halt left in
// the database for a platform no longer configured can still be cleared
// (issue 26, item 11).
func TestResumeRouteNamesAnUnknownPlatform(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	admin := map[string]string{"Authorization": "Bearer " + adminToken}

	resp, body := h.doBody("POST", "/api/credentials/rollout/resume", `{"platform": "myspace"}`, admin)
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != "unknown_platform" || !bytes.Contains(body, []byte(`myspace`)) ||
		!bytes.Contains(body, []byte(`twitter`)) {
		t.Fatalf("an unknown platform: %d %s", resp.StatusCode, body)
	}
	resp, body = h.doBody("POST", "/api/credentials/rollout/resume", `{"platform": "twitter"}`, admin)
	if resp.StatusCode != http.StatusConflict || errorCode(body) != "not_halted" {
		t.Fatalf("a configured platform that is not halted: %d %s", resp.StatusCode, body)
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'rollout_resumed'`); n != 0 {
		t.Fatalf("%d rollout_resumed rows, want none", n)
	}

	pgtest.Exec(t, h.db, `INSERT INTO rollout_halts (platform, halted_at, reason, new_success, new_samples, legacy_success, legacy_samples)
		VALUES ('retired-sso', now(), 'below min_success', 0.5, 60, 1, 60)`)
	resp, body = h.doBody("POST", "/api/credentials/rollout/resume", `{"platform": "retired-sso"}`, admin)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"resumed":"retired-sso"`)) {
		t.Fatalf("a halt left for a platform no longer configured: %d %s", resp.StatusCode, body)
	}
}

// doBody sends an anonymous request with a body.
func (h *harness) doBody(method, path, body string, headers map[string]string) (*http.Response, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.origin+path, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, out
}

// The admin rollout route reads a flag file's percentage from its rule,
// as `rollout status` does: 25 % is 25.0, not a sample's 24.4.
func TestRolloutRouteReadsThePercentageFromTheRule(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(path, []byte(rolloutFile(true, 25)), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOptions{flagsFile: path})
	var rollout struct {
		Platforms []guard.RolloutStatus `json:"platforms"`
	}
	// The flag file is read in the background after the start: a busy
	// machine may answer once before it is (Ready false, 0 %).
	var resp *http.Response
	var body []byte
	waitUntil(t, 10*time.Second, func() bool {
		resp, body = h.do("GET", "/api/credentials/rollout", "", map[string]string{"Authorization": "Bearer " + adminToken})
		rollout.Platforms = nil
		json.Unmarshal(body, &rollout)
		return resp.StatusCode != http.StatusOK || len(rollout.Platforms) == 0 ||
			!slices.ContainsFunc(rollout.Platforms, func(p guard.RolloutStatus) bool { return p.Flags == nil || !p.Flags.Ready })
	})
	if resp.StatusCode != http.StatusOK || len(rollout.Platforms) == 0 {
		t.Fatalf("rollout route: %d %s", resp.StatusCode, body)
	}
	for _, p := range rollout.Platforms {
		if p.Flags == nil || p.Flags.NewPercent != 25 || p.Flags.Measured == flags.MeasuredSampled {
			t.Errorf("%s: %+v, want exactly 25 %% from the rule", p.Platform, p.Flags)
		}
	}
}

// Failures a user can cause on purpose (an error= put on the callback
// URL, a made-up code the platform refuses) cannot halt a platform for
// everyone: each account counts once per window, and together they count
// only once there are min_samples of them. Measured with the default
// guard (min_samples 50): the reported attacks (5 accounts × 10 flows
// on an empty window; one account × 4 flows beside 60 real successes)
// no longer halt; it takes 50 distinct accounts (min_samples), the first
// number at which a flow failing for many real users should halt.
func TestUsersCannotHaltTheRollout(t *testing.T) {
	h := newHarness(t, harnessOptions{globalOptions: "guard {\n\t\t\tmin_samples 50\n\t\t\twindow 10m\n\t\t}"})
	app := currentApp(t)
	forge := func(user string, i int) {
		t.Helper()
		providerURL, cookie := h.startFlow(user, "linkedin", "/settings")
		u, err := url.Parse(providerURL)
		if err != nil {
			t.Fatal(err)
		}
		tail := "&error=server_error"
		if i%2 == 1 {
			tail = "&code=made-up"
		}
		resp, _ := h.callback("/api/auth/oauth/linkedin/callback?state="+url.QueryEscape(u.Query().Get("state"))+tail, cookie, user)
		if loc := resp.Header.Get("Location"); !strings.Contains(loc, "oauth_error=") {
			t.Fatalf("a forged callback did not fail: %d %s", resp.StatusCode, loc)
		}
	}
	// A tick of the guard, now: the outcomes into the window, a verdict.
	settle := func() {
		t.Helper()
		if err := app.guard.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	userFailures := func() int { return h.count(`SELECT coalesce(sum(user_failures), 0)::int FROM rollout_outcomes`) }

	// 5 accounts × 10 forged flows on an empty window: 5 counted.
	for a := range 5 {
		for i := range 10 {
			forge(userN(a), i)
		}
	}
	settle()
	if app.halted("linkedin") {
		t.Fatal("5 accounts halted LinkedIn")
	}
	if n := userFailures(); n != 5 {
		t.Fatalf("%d user-caused failures in the window, want 5 (one per account)", n)
	}
	if out, err := runCLI(t, "rollout", "status", "--database-url", h.db); err != nil ||
		!strings.Contains(out, "new flow no flows (+5 failed a way a user could cause, one per account)") {
		t.Errorf("rollout status does not show the user-caused failures apart: %v\n%s", err, out)
	}
	// 60 real successes, then one more account × 4 forged flows.
	for i := range 60 {
		if loc := h.connect(userN(1000+i), "linkedin"); strings.Contains(loc, "error") {
			t.Fatalf("a real connect failed: %s", loc)
		}
	}
	for i := range 4 {
		forge(userN(5), i)
	}
	settle()
	if app.halted("linkedin") {
		t.Fatal("one account with 4 flows halted LinkedIn beside 60 successes")
	}
	// Up to 49 distinct accounts: still not halted.
	for a := 6; a < 49; a++ {
		forge(userN(a), a)
	}
	settle()
	if app.halted("linkedin") || userFailures() != 49 {
		t.Fatalf("49 accounts: halted %v, %d user-caused failures", app.halted("linkedin"), userFailures())
	}
	// The 50th: as many users failing as min_samples is a flow failing
	// for real users, and it halts (60 of 110).
	forge(userN(49), 0)
	waitUntil(t, 5*time.Second, func() bool { return app.halted("linkedin") })
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND status = 'failed' AND platform = 'linkedin'`); n != 5*10+4+43+1 {
		t.Errorf("%d failed connects audited, want every forged one (98)", n)
	}
}
