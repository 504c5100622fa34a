package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// credgate_demo_app parses its block (defaults for everything but the
// two secrets, which Provision requires), answers its own routes and
// hands every other request to the next handler: the demo page behind it.
func TestDemoAppDirective(t *testing.T) {
	t.Parallel()
	const secrets = "jwt_secret a-jwt-secret-for-the-directive-test\n webhook_secret a-webhook-secret-for-the-directive-test\n"
	for _, tc := range []struct {
		name, block string
		parseErr    string
		provisioned bool
	}{
		{"defaults", secrets, "", true},
		{"every option", "public_origin http://localhost:18080\n sandbox http://localhost:19090\n session_cookie sb-x-auth-token\n" + secrets, "", true},
		{"an unknown option", "colour blue\n" + secrets, `unrecognized option "colour"`, false},
		{"an option without its value", "sandbox\n" + secrets, "wrong argument count", false},
		{"no webhook secret", "jwt_secret a-jwt-secret-for-the-directive-test\n", "", false},
		{"a short webhook secret", "jwt_secret a-jwt-secret-for-the-directive-test\n webhook_secret short\n", "", false},
		{"no jwt secret", "webhook_secret a-webhook-secret-for-the-directive-test\n", "", false},
	} {
		d := new(DemoApp)
		err := d.UnmarshalCaddyfile(caddyfile.NewTestDispenser("credgate_demo_app {\n " + tc.block + "}"))
		if tc.parseErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
				t.Errorf("%s: parse error %v, want %q", tc.name, err, tc.parseErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if err := d.Provision(caddy.Context{}); (err == nil) != tc.provisioned {
			t.Errorf("%s: provision error %v, want provisioned %v", tc.name, err, tc.provisioned)
		}
	}

	d := new(DemoApp)
	if err := d.UnmarshalCaddyfile(caddyfile.NewTestDispenser("credgate_demo_app {\n " + secrets + "}")); err != nil {
		t.Fatal(err)
	}
	if err := d.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Write([]byte("the page"))
		return nil
	})
	for path, want := range map[string]string{
		"/":                       "the page",
		"/credgate.js":            "the page",
		"/api/app/connections":    `"code":"unauthenticated"`,
		"/api/app/events":         `"code":"unauthenticated"`,
		"/api/twitter/connect":    `"code":"unauthenticated"`,
		"/api/mastodon/connect":   "the page",
		"/api/credentials/status": "the page",
	} {
		rec := httptest.NewRecorder()
		if err := d.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil), next); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s: %d %q, want %q", path, rec.Code, rec.Body.String(), want)
		}
	}
}
