package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// docs/identity.md's forward_auth recipe, as written, through a real
// Caddy: an app with its own session (not Supabase's) answers who the
// user is, and credgate reads it through placeholder.
func TestForwardAuthRecipe(t *testing.T) {
	whoami := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/whoami" {
			http.NotFound(w, r)
			return
		}
		if c, err := r.Cookie("app_session"); err == nil && c.Value == "alice-session" {
			w.Header().Set("X-User-Id", alice)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(whoami.Close)
	h := newHarness(t, harnessOptions{metrics: true,
		extraSite: "legacy_start /api/{platform}/connect",
		siteDirectives: fmt.Sprintf(`@credgate_user path /api/*/connect /api/auth/oauth/* /api/credentials/*
	forward_auth @credgate_user %s {
		uri /api/whoami
		copy_headers X-User-Id
		@signed_out status 401
		handle_response @signed_out {
			request_header -X-User-Id
		}
	}`, strings.TrimPrefix(whoami.URL, "http://")),
		identity: "placeholder {http.request.header.X-User-Id}"})

	for _, c := range []struct {
		name    string
		headers map[string]string
		newFlow bool
	}{
		{"signed in", map[string]string{"Cookie": "app_session=alice-session"}, true},
		{"signed out", nil, false},
		{"signed out, forging the header", map[string]string{"X-User-Id": alice}, false},
		{"another session, forging the header", map[string]string{"Cookie": "app_session=bob", "X-User-Id": alice}, false},
	} {
		resp, body := h.do("GET", "/api/twitter/connect", "", c.headers)
		gotNew := resp.StatusCode == http.StatusFound && strings.HasPrefix(resp.Header.Get("Location"), "/api/auth/oauth/twitter")
		gotApp := resp.Header.Get("X-Upstream") == "stub-app"
		if (c.newFlow && !gotNew) || (!c.newFlow && !gotApp) {
			t.Errorf("%s: %d %q %s", c.name, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}
	// The status route answers for the signed-in user only.
	if resp, _ := h.do("GET", "/api/credentials/status", "", map[string]string{"Cookie": "app_session=alice-session"}); resp.StatusCode != http.StatusOK {
		t.Errorf("status signed in: %d", resp.StatusCode)
	}
	if resp, _ := h.do("GET", "/api/credentials/status", "", map[string]string{"X-User-Id": alice}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status with a forged header: %d", resp.StatusCode)
	}
}
