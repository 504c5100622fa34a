package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

// With `server_errors caddy` credgate's own 5xx go to Caddy as errors:
// the site's handle_errors answers them (here with the status and the
// error's "<code>: <message>"), and a site without handle_errors answers
// the bare status, as Caddy does for any handler's error. A 4xx is still
// credgate's JSON, and the default (json) is covered by the tests of
// each route's 5xx (TestATokenReadTheDatabaseFailsIsStillAudited).
func TestServerErrorsCaddyHandsCredgates5xxToHandleErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{
		extraSite:      "server_errors caddy",
		siteDirectives: "handle_errors {\n\t\trespond \"caddy answered {err.status_code} {err.message}\"\n\t}",
		tokenAPI:       "service_token " + serviceToken + "\n\t\tserver_errors caddy",
	})
	h.connect(alice, "twitter")
	back := h.tableAway("social_accounts")
	status, statusBody := h.do("GET", "/api/credentials/status", alice, nil)
	tokenCode, _, tokenBody := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	back()

	if status.StatusCode != http.StatusInternalServerError || !strings.HasPrefix(string(statusBody), "caddy answered 500 internal: internal error (id ") {
		t.Errorf("status with the table away: %d %q, want handle_errors' answer", status.StatusCode, statusBody)
	}
	if tokenCode != http.StatusInternalServerError || len(tokenBody) != 0 {
		t.Errorf("token API with the table away, no handle_errors there: %d %q, want a bare 500", tokenCode, tokenBody)
	}
	resp, body := h.do("GET", "/api/auth/oauth/myspace", alice, nil)
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != "unknown_platform" {
		t.Errorf("a 4xx: %d %s, want credgate's JSON", resp.StatusCode, body)
	}
	resp, body = h.do("GET", "/api/credentials/status", alice, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"platform":"twitter"`) {
		t.Errorf("status with the table back: %d %s", resp.StatusCode, body)
	}
}
