package caddymodule

import (
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
)

// The kill switch and the guard's halt stop new starts on credgate's own
// start route too, not only at the app's connect route; a flow already
// started finishes. Issue 26, item 5: with the kill switch off, a link
// straight to /api/auth/oauth/<platform> still started new flows.
func TestStopsApplyToTheDirectStartRoute(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	setRollout(t, path, true, 0)
	h := newHarness(t, harnessOptions{flagsFile: path, globalOptions: "guard {\n\t\t\tmin_samples 50\n\t\t}"})
	waitUntil(t, 10*time.Second, func() bool { return currentApp(t).Rollout().Ready() })
	start := func(platform string, headers map[string]string) (*http.Response, []byte) {
		t.Helper()
		return h.do("GET", "/api/auth/oauth/"+platform+"?return_to=/settings", alice, headers)
	}
	// At 0 % with the kill switch on, a direct link starts a flow: the
	// percentage governs the app's connect route only.
	inFlight, cookie := h.startFlow(alice, "twitter", "/settings")

	for _, c := range []struct {
		name, platform, code string
		stop, resume         func()
	}{
		{"kill switch off", "twitter", "new_flow_disabled",
			func() { setRollout(t, path, false, 0) }, func() { setRollout(t, path, true, 0) }},
		{"guard halt", "linkedin", "new_flow_halted",
			func() {
				pgtest.Exec(t, h.db, `INSERT INTO rollout_halts (platform, halted_at, reason, new_success, new_samples, legacy_success, legacy_samples)
					VALUES ('linkedin', now(), 'below min_success', 0.5, 60, 1, 60)`)
			},
			func() { pgtest.Exec(t, h.db, `DELETE FROM rollout_halts WHERE platform = 'linkedin'`) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.stop()
			waitUntil(t, 10*time.Second, func() bool {
				resp, _ := start(c.platform, nil)
				return resp.StatusCode != http.StatusFound ||
					!strings.HasPrefix(resp.Header.Get("Location"), h.sbURL)
			})
			resp, body := start(c.platform, nil)
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusFound || loc.Path != "/settings" || loc.Query().Get("oauth_error") != c.code ||
				loc.Query().Get("platform") != c.platform {
				t.Errorf("a browser's start: %d %s %s, want a redirect to /settings?oauth_error=%s", resp.StatusCode, loc, body, c.code)
			}
			for _, sc := range resp.Cookies() {
				if strings.HasPrefix(sc.Name, "__Host-credgate-") {
					t.Errorf("a refused start set %s", sc.Name)
				}
			}
			resp, body = start(c.platform, map[string]string{"Accept": "application/json"})
			if resp.StatusCode != http.StatusConflict || errorCode(body) != c.code {
				t.Errorf("a JSON start: %d %s, want 409 %s", resp.StatusCode, body, c.code)
			}
			// The other platforms are untouched by a halt.
			if c.name == "guard halt" {
				h.startFlow(alice, "twitter", "/settings")
			}
			c.resume()
			waitUntil(t, 10*time.Second, func() bool {
				resp, _ := start(c.platform, nil)
				return resp.StatusCode == http.StatusFound &&
					strings.HasPrefix(resp.Header.Get("Location"), h.sbURL)
			})
		})
	}
	// The flow started before the kill switch went off finishes.
	setRollout(t, path, false, 0)
	waitUntil(t, 10*time.Second, func() bool {
		resp, _ := start("twitter", nil)
		return !strings.HasPrefix(resp.Header.Get("Location"), h.sbURL)
	})
	resp, body := h.callback(h.authorize(inFlight), cookie, alice)
	if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "connected=twitter") {
		t.Fatalf("the flow in progress: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
}
