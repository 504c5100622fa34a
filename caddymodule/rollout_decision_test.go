package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/pgtest"
)

// rolloutDecisionAnswer is the decision route's body.
type rolloutDecisionAnswer struct {
	Platform   string   `json:"platform"`
	Flow       string   `json:"flow"`
	Reason     string   `json:"reason"`
	Percentage *float64 `json:"percentage"`
	Location   *string  `json:"location"`
}

// decision asks the decision route for user ("" = anonymous) on platform,
// from the page the connect route tests come from, and wants a 200.
func (h *harness) decision(user, platform, query string) rolloutDecisionAnswer {
	h.t.Helper()
	resp, body := h.do("GET", "/api/credentials/rollout/"+platform+query, user, map[string]string{"Referer": h.origin + "/accounts?tab=social"})
	var got rolloutDecisionAnswer
	if err := json.Unmarshal(body, &got); resp.StatusCode != http.StatusOK || err != nil {
		h.t.Fatalf("decision route for %q on %s: %d %s", user, platform, resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		h.t.Fatalf("decision route: Cache-Control %q", cc)
	}
	return got
}

// decisionsCounted is how many decisions the rollout has counted.
func decisionsCounted(t *testing.T) uint64 {
	var n uint64
	for _, c := range currentApp(t).Rollout().Counts().Snapshot() {
		n += c.Count
	}
	return n
}

// followLegacy sends user's browser to the decision route's legacy
// location and wants the app to get the connect, without credgate's mark.
func (h *harness) followLegacy(user, location string) {
	h.t.Helper()
	before := len(h.upstreamSaw())
	resp, _ := h.do("GET", location, user, nil)
	if resp.Header.Get("X-Upstream") != "stub-app" {
		h.t.Fatalf("following %s: %d %s, not the app", location, resp.StatusCode, resp.Header.Get("Location"))
	}
	seen := h.upstreamSaw()[before:]
	if len(seen) != 1 || seen[0].Path != strings.SplitN(location, "?", 2)[0] || strings.Contains(seen[0].Query, flags.DecidedParam) {
		h.t.Fatalf("the app saw %+v after %s", seen, location)
	}
}

// The decision route gives each user the arm, reason and location the
// connect route gives them, decided and counted once: 1,000 users at
// 25, 50 and 75 %, each asked at the decision route (a browser sent on
// to where it says), then at the connect route. Issue 27.
func TestRolloutDecisionAgreesWithTheConnectRoute(t *testing.T) {
	h, path := newLegacyHarness(t, true, 25, "")
	const users = 1000
	for _, c := range []struct {
		percent int
		newlyIn [2]float64 // a bucket the previous step did not send to the new flow
		lo, hi  float64    // the share of new users we accept
	}{{25, [2]float64{5, 20}, 20, 30}, {50, [2]float64{30, 45}, 45, 55}, {75, [2]float64{55, 70}, 70, 80}} {
		setRollout(t, path, true, c.percent)
		h.waitForRollout(userInBucket(c.newlyIn[0], c.newlyIn[1]), true)
		waitUntil(t, 10*time.Second, func() bool {
			p := h.decision(userN(0), "twitter", "").Percentage
			return p != nil && *p == float64(c.percent)
		})

		before := decisionsCounted(t)
		answers := make([]rolloutDecisionAnswer, users)
		onNew := 0
		for i := range users {
			a := h.decision(userN(i), "twitter", "")
			answers[i] = a
			if a.Platform != "twitter" || a.Reason != "rollout" || a.Percentage == nil || *a.Percentage != float64(c.percent) || a.Location == nil {
				t.Fatalf("at %d %%, user %d: %+v", c.percent, i, a)
			}
			switch a.Flow {
			case "new":
				onNew++
			case "legacy":
				h.followLegacy(userN(i), *a.Location)
			default:
				t.Fatalf("user %d: flow %q", i, a.Flow)
			}
		}
		if n := decisionsCounted(t) - before; n != users {
			t.Errorf("at %d %%: %d decisions counted for %d users who asked and followed the answer, want one each", c.percent, n, users)
		}
		if share := float64(onNew) / users * 100; share < c.lo || share > c.hi {
			t.Errorf("at %d %%: %.1f %% on the new flow", c.percent, share)
		}
		for i := range users {
			resp, _ := h.do("GET", "/api/twitter/connect", userN(i), map[string]string{"Referer": h.origin + "/accounts?tab=social"})
			a := answers[i]
			switch {
			case resp.StatusCode == http.StatusFound && resp.Header.Get("X-Upstream") == "":
				if a.Flow != "new" || *a.Location != resp.Header.Get("Location") {
					t.Fatalf("at %d %%, user %d: the connect route sends to %s, the decision route said %s %s",
						c.percent, i, resp.Header.Get("Location"), a.Flow, *a.Location)
				}
			case resp.Header.Get("X-Upstream") == "stub-app":
				if a.Flow != "legacy" || !strings.HasPrefix(*a.Location, "/api/twitter/connect?"+flags.DecidedParam+"=") {
					t.Fatalf("at %d %%, user %d: the connect route hands to the app, the decision route said %s %s", c.percent, i, a.Flow, *a.Location)
				}
			default:
				t.Fatalf("connect route for user %d: %d", i, resp.StatusCode)
			}
		}
		t.Logf("at %d %%: %d of %d users on the new flow, both routes agree", c.percent, onNew, users)
	}
}

// The decision route's refusals and the stops it applies as the connect
// route does: an unknown platform, a bad return_to, no identity, the
// kill switch off, a guard halt, a decided mark that is not this user's,
// no legacy_start, and legacy off. Issue 27.
func TestRolloutDecisionRouteStops(t *testing.T) {
	path := t.TempDir() + "/flags.json"
	setRollout(t, path, true, 100)
	h := newHarness(t, harnessOptions{flagsFile: path, legacyRedirect: true,
		globalOptions: "guard {\n\t\t\tmin_samples 50\n\t\t}", extraSite: "legacy_start /api/{platform}/connect"})
	waitUntil(t, 10*time.Second, func() bool { return currentApp(t).Rollout().Ready() })
	h.waitForRollout(userInBucket(90, 99), true)

	// Unknown platform: 404 naming it, nothing decided.
	before := decisionsCounted(t)
	resp, body := h.do("GET", "/api/credentials/rollout/myspace", alice, nil)
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != "unknown_platform" || !strings.Contains(string(body), `myspace`) {
		t.Errorf("unknown platform: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do("GET", "/api/credentials/rollout/twitter?return_to=https://evil.example/", alice, nil)
	if resp.StatusCode != http.StatusBadRequest || errorCode(body) != "invalid_return_to" {
		t.Errorf("a foreign return_to: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do("POST", "/api/credentials/rollout/twitter", alice, nil)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Errorf("POST: %d %s", resp.StatusCode, body)
	}
	if n := decisionsCounted(t) - before; n != 0 {
		t.Errorf("refused requests counted %d decisions", n)
	}

	// A return_to the start route accepts is where the new flow returns.
	got := h.decision(alice, "twitter", "?return_to="+url.QueryEscape("/settings/social?x=1"))
	if got.Flow != "new" || got.Reason != "rollout" || got.Location == nil ||
		*got.Location != "/api/auth/oauth/twitter?return_to="+url.QueryEscape("/settings/social?x=1") || got.Percentage == nil || *got.Percentage != 100 {
		t.Errorf("at 100 %%: %+v", got)
	}
	if providerURL, _ := h.startFlow(alice, "twitter", "/settings/social?x=1"); !strings.HasPrefix(providerURL, h.sbURL) {
		t.Errorf("the new location does not start a flow: %s", providerURL)
	}

	// No identity: legacy, no_identity, as at the connect route.
	got = h.decision("", "facebook", "")
	if got.Flow != "legacy" || got.Reason != "no_identity" || got.Location == nil {
		t.Fatalf("anonymous: %+v", got)
	}
	h.followLegacy("", *got.Location)
	if resp, _ := h.do("GET", "/api/facebook/connect", "", nil); resp.Header.Get("X-Upstream") != "stub-app" {
		t.Errorf("the connect route does not hand an anonymous user to the app: %d", resp.StatusCode)
	}
	// A mark is the user's and the platform's own: another user, or
	// another platform, is decided again (at 100 %: the new flow).
	for _, c := range []struct{ user, location string }{
		{alice, *got.Location},
		{"", strings.Replace(*got.Location, "/api/facebook/", "/api/linkedin/", 1)},
	} {
		before := decisionsCounted(t)
		resp, _ := h.do("GET", c.location, c.user, nil)
		if c.user != "" && (resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/api/auth/oauth/facebook?")) {
			t.Errorf("alice with an anonymous mark: %d %s, want the new flow", resp.StatusCode, resp.Header.Get("Location"))
		}
		if n := decisionsCounted(t) - before; n != 1 {
			t.Errorf("%q with a mark not theirs (%s): %d decisions, want 1", c.user, c.location, n)
		}
	}

	// The kill switch off: legacy, kill_switch, 0 %, as at the connect route.
	setRollout(t, path, false, 100)
	h.waitForRollout(userInBucket(10, 20), false)
	waitUntil(t, 10*time.Second, func() bool {
		p := h.decision(alice, "twitter", "").Percentage
		return p != nil && *p == 0
	})
	got = h.decision(alice, "twitter", "")
	if got.Flow != "legacy" || got.Reason != "kill_switch" || got.Location == nil {
		t.Errorf("kill switch off: %+v", got)
	}
	if h.legacyStartIsNew(alice, "twitter") {
		t.Error("kill switch off: the connect route sends alice to the new flow")
	}

	// A guard halt: legacy, guard_halted, 0 %, on that platform only.
	setRollout(t, path, true, 100)
	h.waitForRollout(userInBucket(10, 20), true)
	pgtest.Exec(t, h.db, `INSERT INTO rollout_halts (platform, halted_at, reason, new_success, new_samples, legacy_success, legacy_samples)
		VALUES ('linkedin', now(), 'below min_success', 0.5, 60, 1, 60)`)
	waitUntil(t, 10*time.Second, func() bool { return currentApp(t).halted("linkedin") })
	got = h.decision(alice, "linkedin", "")
	if got.Flow != "legacy" || got.Reason != "guard_halted" || got.Percentage == nil || *got.Percentage != 0 || got.Location == nil {
		t.Errorf("halted: %+v", got)
	}
	if h.legacyStartIsNew(alice, "linkedin") {
		t.Error("halted: the connect route sends alice to the new flow")
	}
	if got := h.decision(alice, "twitter", ""); got.Flow != "new" {
		t.Errorf("a halt on linkedin moved twitter: %+v", got)
	}

	// Without legacy_start credgate does not know the app's connect
	// route: a legacy answer has no location.
	h.load("")
	got = h.decision("", "twitter", "")
	if got.Flow != "legacy" || got.Reason != "no_identity" || got.Location != nil {
		t.Errorf("no legacy_start: %+v", got)
	}

	// legacy off: everyone to the new flow, nothing asked or counted.
	h.load("legacy off\nlegacy_start /api/{platform}/connect")
	before = decisionsCounted(t)
	for _, user := range []string{alice, ""} {
		got = h.decision(user, "twitter", "")
		if got.Flow != "new" || got.Reason != "legacy_off" || got.Percentage == nil || *got.Percentage != 100 ||
			got.Location == nil || *got.Location != "/api/auth/oauth/twitter?return_to=%2Faccounts%3Ftab%3Dsocial" {
			t.Errorf("legacy off, %q: %+v", user, got)
		}
		if !h.legacyStartIsNew(user, "twitter") {
			t.Errorf("legacy off, %q: the connect route does not send to the new flow", user)
		}
	}
	if n := decisionsCounted(t) - before; n != 0 {
		t.Errorf("legacy off: %d decisions counted", n)
	}
}
