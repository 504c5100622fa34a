package caddymodule

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/credgate/credgate/internal/supabasetest"
	"github.com/credgate/credgate/sandbox/supabaseauth"
)

// supabaseHarness is a real Caddy whose identity is a Supabase project's
// session cookie, with the rollout at 100 % on the app's connect route,
// and a Supabase Auth stand-in that knows the fixtures' sessions.
func supabaseHarness(t *testing.T) (*harness, map[string]supabasetest.Fixture, *supabaseauth.Server) {
	t.Helper()
	fixtures, keys := supabasetest.Load(t)
	authSrv, auth := supabasetest.Auth(t, fixtures, keys)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	h := newHarness(t, harnessOptions{metrics: true, legacyRedirect: true,
		// A log of credgate's own, so Caddy's default logger (which the
		// tests after this one use) stays where it is.
		caddyGlobals: "log credgate {\n\t\toutput file " + logFile + "\n\t\tformat json\n\t\tinclude http.handlers.credgate\n\t}",
		extraSite:    "legacy_start /api/{platform}/connect",
		identity: fmt.Sprintf(`supabase %s {
				publishable_key %s
				auth_url %s/auth/v1
				refuse_anonymous
			}
			jwt_secret %s`, fixtures["ssr-single"].ProjectURL, supabasetest.PublishableKey, auth.URL, keys.HS256Secret)})
	h.logFile = logFile
	return h, fixtures, authSrv
}

// browserGet sends a navigation with the browser's cookie jar and
// returns the response, the jar updated by its Set-Cookie lines.
func (h *harness) browserGet(target, jar string) (*http.Response, string) {
	h.t.Helper()
	resp, _ := h.do("GET", target, "", map[string]string{"Cookie": jar, "Referer": h.origin + "/settings", "Sec-Fetch-Site": "same-origin"})
	return resp, supabasetest.Browser(jar, resp.Cookies())
}

// At 100 %, a user of a current Supabase app, whatever the shape of the
// session cookie (single, chunked, ES256, raw JSON, the auth-helpers
// array) or an hour-stale access token, who clicks Connect gets the new
// flow and a whole connect.
func TestSupabaseSessionsConnectThroughCaddy(t *testing.T) {
	h, fixtures, authSrv := supabaseHarness(t)
	for _, name := range []string{"ssr-single", "ssr-chunked", "ssr-es256", "ssr-raw", "auth-helpers-0.10", "ssr-expired"} {
		fx := fixtures[name]
		before := h.scrape()
		resp, jar := h.browserGet("/api/twitter/connect", fx.CookieHeader)
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/api/auth/oauth/twitter?") {
			t.Fatalf("%s: the connect route answered %d %q, not the new flow", name, resp.StatusCode, resp.Header.Get("Location"))
		}
		// The connect route recognises a stale session's user but never
		// rewrites it (it may hand the request to the app); credgate's
		// own start route refreshes it.
		atConnect, atStart := "ok", "ok"
		if fx.Expired {
			atConnect, atStart = "stale", "refreshed"
			if len(resp.Cookies()) != 0 {
				t.Errorf("%s: the connect route wrote cookies: %v", name, resp.Cookies())
			}
		}
		resp, jar = h.browserGet(resp.Header.Get("Location"), jar)
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("%s: start answered %d", name, resp.StatusCode)
		}
		if fx.Expired {
			access, _ := supabasetest.ReadBack(t, fx.ProjectURL, jar)
			if access == "" || access == fx.AccessToken {
				t.Fatalf("%s: @supabase/ssr does not read the refreshed session from credgate's Set-Cookie", name)
			}
		}
		after := h.scrape()
		for route, want := range map[string]string{"connect": atConnect, "start": atStart} {
			if d := metricValue(after, "credgate_identity_total", `route="`+route+`"`, `result="`+want+`"`) -
				metricValue(before, "credgate_identity_total", `route="`+route+`"`, `result="`+want+`"`); d != 1 {
				t.Errorf("%s: credgate_identity_total{route=%q,result=%q} moved by %v", name, route, want, d)
			}
		}
		cb := h.authorize(resp.Header.Get("Location"))
		resp, _ = h.browserGet(strings.TrimPrefix(cb, h.origin), jar)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || loc.Query().Get("connected") != "twitter" {
			t.Fatalf("%s: callback %d %s", name, resp.StatusCode, loc)
		}
		if n := h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND platform = 'twitter' AND connected_via = 'credgate'`, fx.UserID); n != 1 {
			t.Errorf("%s: %d credgate rows for the user", name, n)
		}
	}
	if n := authSrv.Counts().Refreshes; n != 1 {
		t.Errorf("%d refreshes at Supabase Auth for one stale session through a whole connect, want 1", n)
	}
}

// Requests that name no user go to the app and are counted by reason,
// and the decision is counted as no_identity.
func TestUnrecognisedUsersAreCountedByReason(t *testing.T) {
	h, fixtures, authSrv := supabaseHarness(t)
	single := fixtures["ssr-single"]
	key := single.StorageKey
	anonKey, err := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSecret(),
		supabaseauth.WithClaim("role", "anon"), supabaseauth.WithoutClaim("sub"))
	if err != nil {
		t.Fatal(err)
	}
	wrongAud, _ := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSecret(), supabaseauth.WithClaim("aud", "other"))
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	madeUpKID, _ := authSrv.Token(supabaseauth.User{ID: single.UserID}, supabaseauth.WithSigner(jwt.SigningMethodES256, stranger, "made-up"))
	for _, c := range []struct{ cookie, want string }{
		{"", "missing"},
		{key + "=base64-!!!", "malformed"},
		{key + "=" + wrongAud, "wrong_audience"},
		{key + "=" + anonKey, "not_user"},
		{fixtures["ssr-anonymous"].CookieHeader, "anonymous"},
		{key + "=" + madeUpKID, "unknown_kid"},
		{key + "=" + strings.Replace(single.AccessToken, `.`, `.x`, 1), "malformed"},
	} {
		before := h.scrape()
		resp, _ := h.browserGet("/api/linkedin/connect", c.cookie)
		if resp.Header.Get("X-Upstream") != "stub-app" {
			t.Fatalf("%s: %d, not the app", c.want, resp.StatusCode)
		}
		after := h.scrape()
		if d := metricValue(after, "credgate_identity_total", `route="connect"`, `result="`+c.want+`"`) -
			metricValue(before, "credgate_identity_total", `route="connect"`, `result="`+c.want+`"`); d != 1 {
			t.Errorf("%s: counted %v times", c.want, d)
		}
		if d := metricValue(after, "credgate_rollout_decisions_total", `platform="linkedin"`, `reason="no_identity"`) -
			metricValue(before, "credgate_rollout_decisions_total", `platform="linkedin"`, `reason="no_identity"`); d != 1 {
			t.Errorf("%s: no_identity decision moved by %v", c.want, d)
		}
	}
	// Most of the last minute's requests named no one, with the rollout
	// at 100 %: once there are enough of them, the log says so, once.
	for range 4 {
		h.browserGet("/api/linkedin/connect", "")
	}
	logged, _ := os.ReadFile(h.logFile)
	if n := strings.Count(string(logged), "carry no identity credgate recognises"); n != 1 {
		t.Errorf("%d warnings in the log, want 1:\n%s", n, logged)
	}
	if !strings.Contains(string(logged), `"commonest_reason":"missing"`) {
		t.Errorf("the warning does not name the commonest reason (missing)")
	}

	// The operator's command sees it, from every replica's shared count.
	var out string
	waitUntil(t, 10*time.Second, func() bool {
		out, _ = runCLI(t, "rollout", "status", "--database-url", h.db)
		return strings.Contains(out, "11 legacy (no_identity)")
	})
	if !strings.Contains(out, "⚠ 11 of 11 decisions had no identity credgate recognises") {
		t.Errorf("rollout status does not warn:\n%s", out)
	}
	// And service-health names the share and the commonest reason.
	resp, body := h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
	var health struct {
		Identity struct {
			Requests  int     `json:"connect_requests"`
			Share     float64 `json:"unrecognised_share"`
			Commonest string  `json:"commonest_reason"`
			Warning   string  `json:"warning"`
		} `json:"identity"`
	}
	if err := json.Unmarshal(body, &health); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("service-health %d: %s", resp.StatusCode, body)
	}
	if id := health.Identity; id.Requests != 11 || id.Share != 1 || id.Commonest != "missing" || id.Warning == "" {
		t.Errorf("service-health identity: %+v", id)
	}
}
