package demoapp_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/sandbox/demoapp"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/webhook"
)

const (
	jwtSecret  = "a-jwt-secret-for-the-demo-app-tests"
	hookSecret = "a-webhook-secret-for-the-demo-app-tests"
	alice      = "11111111-1111-4111-8111-111111111111"
	bob        = "22222222-2222-4222-8222-222222222222"
	// appOrigin is where the browser would reach the app (through
	// credgate); the test follows the redirects itself.
	appOrigin = "http://app.test"
)

// Not on http.DefaultTransport, which parallel tests' servers close
// (see testhttp).
var noRedirects = testhttp.NoRedirects()

// demo runs the sandbox and the app, and returns the app's URL.
func demo(t *testing.T) string {
	t.Helper()
	box := httptest.NewServer(sandbox.New(sandbox.Config{Apps: sandbox.DefaultApps(appOrigin)}))
	t.Cleanup(box.Close)
	app, err := demoapp.New(demoapp.Config{PublicOrigin: appOrigin, SandboxURL: box.URL, SessionCookie: "sb-app-auth-token",
		JWTSecret: secret.New(jwtSecret), WebhookSecret: secret.New(hookSecret)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	return srv.URL
}

// session is an access token for user as Supabase Auth issues them.
func session(t *testing.T, user string) string {
	t.Helper()
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "aud": "authenticated",
		"role": "authenticated", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// get requests u as user (none: "") with the sandbox_user cookie of
// sandboxUser (none: ""), without following a redirect.
func get(t *testing.T, method, u, user, sandboxUser string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+session(t, user))
	}
	if sandboxUser != "" {
		req.AddCookie(&http.Cookie{Name: sandbox.UserCookie, Value: sandboxUser})
	}
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// legacyConnect runs one of the app's own flows for user, who is
// sandboxUser at the platform, with the consent's decision, and returns
// where the app sends the browser at the end.
func legacyConnect(t *testing.T, app, platform, user, sandboxUser, decision string) *url.URL {
	t.Helper()
	resp, body := get(t, http.MethodGet, app+"/api/"+platform+"/connect", user, "")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("connect: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, http.MethodGet, resp.Header.Get("Location")+"&sandbox_decision="+decision, "", sandboxUser)
	callback, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(callback.String(), appOrigin+"/api/"+platform+"/callback?") {
		t.Fatalf("consent: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	callback.Fragment = ""
	resp, body = get(t, http.MethodGet, app+callback.RequestURI(), user, "")
	end, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	return end
}

func connections(t *testing.T, app, user string) []demoapp.Connection {
	t.Helper()
	resp, body := get(t, http.MethodGet, app+demoapp.ConnectionsPath, user, "")
	var list struct{ Connections []demoapp.Connection }
	if err := json.Unmarshal([]byte(body), &list); resp.StatusCode != http.StatusOK || err != nil || list.Connections == nil {
		t.Fatalf("connections: %d %s", resp.StatusCode, body)
	}
	return list.Connections
}

// The app's own flow, as credgate hands it over on the legacy arm: the
// callback exchanges the code at the platform and keeps the account it
// names for the user who started it, and the page lists it; each user
// has theirs, a declined consent and a state the app never issued keep
// nothing.
func TestTheAppRecordsTheConnectionsItMakes(t *testing.T) {
	t.Parallel()
	app := demo(t)
	for _, platform := range []string{"twitter", "linkedin", "facebook", "instagram"} {
		end := legacyConnect(t, app, platform, alice, "alice", "approve")
		if end.Path != "/" || end.Query().Get("legacy_connected") != platform {
			t.Fatalf("%s: the app sends the browser to %s", platform, end)
		}
	}
	bobEnd := legacyConnect(t, app, "twitter", bob, "bob", "approve")
	if bobEnd.Query().Get("legacy_connected") != "twitter" {
		t.Fatalf("bob's connect ends at %s", bobEnd)
	}
	got := connections(t, app, alice)
	if len(got) != 4 {
		t.Fatalf("alice's connections: %+v, want 4", got)
	}
	var aliceTwitter demoapp.Connection
	for _, c := range got {
		if c.Username != "alice" || c.AccountID == "" || time.Since(c.ConnectedAt) > time.Minute {
			t.Errorf("alice's %s connection: %+v", c.Platform, c)
		}
		if c.Platform == "twitter" {
			aliceTwitter = c
		}
	}
	bobs := connections(t, app, bob)
	if len(bobs) != 1 || bobs[0].Username != "bob" || bobs[0].AccountID == aliceTwitter.AccountID {
		t.Errorf("bob's connections: %+v (alice's twitter account %s)", bobs, aliceTwitter.AccountID)
	}

	carol := "33333333-3333-4333-8333-333333333333"
	if end := legacyConnect(t, app, "linkedin", carol, "carol", "deny"); end.Query().Get("legacy_error") != "access_denied" ||
		end.Query().Get("platform") != "linkedin" {
		t.Errorf("a declined consent ends at %s, want legacy_error=access_denied", end)
	}
	if resp, _ := get(t, http.MethodGet, app+"/api/twitter/callback?code=x&state=not-the-apps", carol, ""); !strings.Contains(resp.Header.Get("Location"), "legacy_error=invalid_state") {
		t.Errorf("a state the app never issued: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if c := connections(t, app, carol); len(c) != 0 {
		t.Errorf("carol's connections after a decline: %+v", c)
	}

	// Disconnect: gone from the list; again, 404.
	if resp, body := get(t, http.MethodDelete, app+demoapp.ConnectionsPath+"/twitter", bob, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("disconnect: %d %s", resp.StatusCode, body)
	}
	if c := connections(t, app, bob); len(c) != 0 {
		t.Errorf("bob's connections after the disconnect: %+v", c)
	}
	if resp, _ := get(t, http.MethodDelete, app+demoapp.ConnectionsPath+"/twitter", bob, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a second disconnect: %d", resp.StatusCode)
	}
	if resp, _ := get(t, http.MethodGet, app+demoapp.ConnectionsPath, "", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the list without a session: %d", resp.StatusCode)
	}
}

// The webhook receiver keeps only deliveries whose signature verifies
// with its secret (401 for anything else, kept nowhere), and lists each
// event once however often it is delivered, to its user only.
func TestTheAppKeepsOnlyVerifiedWebhookEvents(t *testing.T) {
	t.Parallel()
	app := demo(t)
	event := func(id string) []byte {
		b, _ := json.Marshal(map[string]any{"id": id, "type": "account.needs_reauth", "created_at": time.Now().UTC(),
			"user_id": alice, "platform": "facebook", "account_id": "acc-" + id, "data": map[string]string{"reason": "expired"}})
		return b
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		sign   func(req *http.Request, body []byte)
		status int
	}{
		{"signed with the secret", event("e1"), func(req *http.Request, body []byte) {
			webhook.SignRequest(req, "e1", body, time.Now(), []byte(hookSecret))
		}, http.StatusOK},
		{"the same event delivered again", event("e1"), func(req *http.Request, body []byte) {
			webhook.SignRequest(req, "e1", body, time.Now(), []byte(hookSecret))
		}, http.StatusOK},
		{"signed with another secret", event("e2"), func(req *http.Request, body []byte) {
			webhook.SignRequest(req, "e2", body, time.Now(), []byte("another-secret-of-enough-length"))
		}, http.StatusUnauthorized},
		{"a body changed after signing", event("e3"), func(req *http.Request, body []byte) {
			webhook.SignRequest(req, "e3", bytes.Replace(body, []byte("facebook"), []byte("twitter"), 1), time.Now(), []byte(hookSecret))
		}, http.StatusUnauthorized},
		{"a replay from an hour ago", event("e4"), func(req *http.Request, body []byte) {
			webhook.SignRequest(req, "e4", body, time.Now().Add(-time.Hour), []byte(hookSecret))
		}, http.StatusUnauthorized},
		{"no signature", event("e5"), func(*http.Request, []byte) {}, http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodPost, app+demoapp.HookPath, bytes.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		tc.sign(req, tc.body)
		resp, err := testhttp.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
	resp, body := get(t, http.MethodGet, app+demoapp.EventsPath, alice, "")
	var list struct{ Events []demoapp.Event }
	if err := json.Unmarshal([]byte(body), &list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %d %s", resp.StatusCode, body)
	}
	if len(list.Events) != 1 || list.Events[0].ID != "e1" || list.Events[0].Deliveries != 2 ||
		list.Events[0].Type != "account.needs_reauth" || list.Events[0].Platform != "facebook" || !strings.Contains(string(list.Events[0].Data), "expired") {
		t.Errorf("alice's events: %s, want e1 alone, delivered twice", body)
	}
	if _, body := get(t, http.MethodGet, app+demoapp.EventsPath, bob, ""); !strings.Contains(body, `"events":[]`) {
		t.Errorf("bob sees alice's events: %s", body)
	}
}
