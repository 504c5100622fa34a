package backend_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/backend"
	"github.com/credgate/credgate/egress"
	"github.com/credgate/credgate/internal/flowtest"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

const (
	alice        = "00000000-0000-4000-8000-00000000000a"
	bob          = "00000000-0000-4000-8000-00000000000b"
	serviceToken = "a-service-token-of-sufficient-length"
)

// newService is the back end's Service as credgate_tokens and
// credgate_egress provision it, on a flowtest.Env with alice connected
// on twitter, without Caddy.
func newService(t *testing.T) (*backend.Service, *flowtest.Env) {
	t.Helper()
	env := flowtest.New(t, func(p string) string { return "https://app.test/api/auth/oauth/" + p + "/callback" })
	env.Connect(t, alice, "twitter")
	tracer := noop.NewTracerProvider().Tracer("test")
	return &backend.Service{Token: secret.New(serviceToken), MinValidity: 5 * time.Minute, Refresher: env.Refresher,
		Metrics: telemetry.New(), ReadAudit: &vault.ReadAudit{Window: time.Minute}, BackendReads: new(vault.BackendReads),
		Available: func() bool { return true }, Logger: zap.NewNop(),
		Answers: answer.Tracker{Tracer: tracer, Health: telemetry.NewHealth(), Route: func(string, string) string { return telemetry.RouteOther }},
	}, env
}

func call(h http.Handler, method, target, bearer string, headers map[string]string, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if body == "" {
		r = httptest.NewRequest(method, target, nil)
	}
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func errorCode(w *httptest.ResponseRecorder) string {
	var body struct{ Error struct{ Code string } }
	json.Unmarshal(w.Body.Bytes(), &body)
	return body.Error.Code
}

// The token API hands the back end the token the platform accepts, and
// refuses what it must with its code; nothing is revealed without the
// service token.
func TestTheTokenAPIServesTheCurrentToken(t *testing.T) {
	t.Parallel()
	s, env := newService(t)
	api := &backend.TokenAPI{Service: s}
	w := call(api, "GET", backend.TokenRoutePrefix+alice+"/twitter/token", serviceToken, nil, "")
	var tok answer.Token
	if err := json.Unmarshal(w.Body.Bytes(), &tok); w.Code != 200 || err != nil || tok.AccessToken == "" || tok.TokenType != "bearer" || tok.ExpiresAt == nil {
		t.Fatalf("a read: %d %s", w.Code, w.Body)
	}
	req, _ := http.NewRequest("GET", env.Providers["twitter"].APIBase()+"/2/users/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the platform refused the token served: %d", resp.StatusCode)
	}
	for _, c := range []struct {
		name, target, bearer string
		status               int
		code                 string
	}{
		{"no service token", alice + "/twitter/token", "", 401, "unauthorized"},
		{"a wrong service token", alice + "/twitter/token", serviceToken + "x", 401, "unauthorized"},
		{"not a UUID", "alice/twitter/token", serviceToken, 400, "invalid_user"},
		{"an unknown platform", alice + "/myspace/token", serviceToken, 404, "unknown_platform"},
		{"no account", bob + "/twitter/token", serviceToken, 404, "not_connected"},
		{"another route", alice + "/twitter", serviceToken, 404, "not_found"},
	} {
		if w := call(api, "GET", backend.TokenRoutePrefix+c.target, c.bearer, nil, ""); w.Code != c.status || errorCode(w) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Body, c.status, c.code)
		}
	}
	if w := call(api, "POST", backend.TokenRoutePrefix+alice+"/twitter/token", serviceToken, nil, ""); w.Code != 405 || w.Header().Get("Allow") != "GET" {
		t.Errorf("a POST: %d %v", w.Code, w.Header())
	}
	s.Available = func() bool { return false }
	if w := call(api, "GET", backend.TokenRoutePrefix+alice+"/twitter/token", serviceToken, nil, ""); w.Code != 503 || errorCode(w) != "unavailable" {
		t.Errorf("storage unavailable: %d %s", w.Code, w.Body)
	}
}

// Egress makes the platform call with the user's token in place of the
// caller's credentials, and only to the platform's own API base.
func TestEgressCallsThePlatformWithTheUsersToken(t *testing.T) {
	t.Parallel()
	s, env := newService(t)
	bases := map[string]*url.URL{}
	for name, p := range env.Providers {
		bases[name], _ = url.Parse(p.APIBase())
	}
	proxy := &backend.Egress{Service: s, MaxRetryBody: 1 << 20, BodyTimeout: 10 * time.Second, MaxInFlight: 4,
		Transport: egress.NewTransport(5*time.Second, 30*time.Second), Bases: bases}
	user := map[string]string{"X-Credgate-User": alice, "Content-Type": "application/json"}
	w := call(proxy, "POST", "/twitter/2/tweets", serviceToken, user, `{"text":"hello"}`)
	if w.Code != http.StatusCreated || !strings.Contains(w.Body.String(), `"text":"hello"`) {
		t.Fatalf("a tweet through egress: %d %s", w.Code, w.Body)
	}
	for _, c := range []struct {
		name, path, bearer string
		headers            map[string]string
		status             int
		code               string
	}{
		{"no service token", "/twitter/2/tweets", "", user, 401, "unauthorized"},
		{"no user", "/twitter/2/tweets", serviceToken, nil, 400, "invalid_user"},
		{"an unknown platform", "/myspace/2/tweets", serviceToken, user, 404, "unknown_platform"},
		{"a path that leaves the API", "/twitter/../../etc", serviceToken, user, 400, "invalid_path"},
		{"no account", "/twitter/2/tweets", serviceToken, map[string]string{"X-Credgate-User": bob}, 404, "not_connected"},
	} {
		if w := call(proxy, "POST", c.path, c.bearer, c.headers, `{"text":"x"}`); w.Code != c.status || errorCode(w) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Body, c.status, c.code)
		}
	}
}
