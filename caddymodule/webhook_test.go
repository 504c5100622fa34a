package caddymodule

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/internal/caddylog"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/webhook"
)

const webhookSecret = "webhook-secret-for-tests-0123456789"

// appWebhook is the app's webhook endpoint: it verifies every delivery
// with the shared secret, as docs/webhooks.md tells an app to.
type appWebhook struct {
	mu     sync.Mutex
	bodies []webhook.Body
	raw    []string
	bad    int
}

func (a *appWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := webhook.Verify(r.Header, body, []byte(webhookSecret), time.Now(), 0); err != nil {
		a.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var b webhook.Body
	json.Unmarshal(body, &b)
	a.bodies, a.raw = append(a.bodies, b), append(a.raw, string(body))
}

// events are "<type> <platform> <user>" in arrival order.
func (a *appWebhook) events() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []string{}
	for _, b := range a.bodies {
		out = append(out, string(b.Type)+" "+b.Platform+" "+b.UserID)
	}
	return out
}

func (a *appWebhook) has(event string) bool { return slices.Contains(a.events(), event) }

// Every kind of account event reaches the app through a real Caddy,
// signed, within seconds of its change, and none carries a token.
func TestTheAppHearsOfEveryAccountThatNeedsItsUser(t *testing.T) {
	app := &appWebhook{}
	receiver := httptest.NewServer(app)
	defer receiver.Close()
	const carol, dave = "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
	h := newHarness(t, harnessOptions{
		tokenAPI: "service_token " + serviceToken,
		globalOptions: `refresh_max_attempts 1
		webhook ` + receiver.URL + `/hooks/credgate {
			secret ` + webhookSecret + `
			retry_backoff 100ms 1s
			poll_interval 100ms
		}`,
	})
	within := func(event string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !app.has(event) {
			if time.Now().After(deadline) {
				t.Logf("refresh jobs: %v", h.rows(`SELECT a.user_id::text || ' ' || a.platform || ' ' || q.status || ' ' || q.run_at::text || ' ' || coalesce(q.last_error, '') FROM token_refresh_queue q JOIN social_accounts a ON a.id = q.social_account_id`))
				t.Logf("outbox: %v; the clock: %v", h.rows(`SELECT kind || ' ' || status || ' ' || coalesce(last_error, '') FROM credgate_webhook_outbox ORDER BY id`), h.sandbox.Clock().Now())
				t.Fatalf("the app did not hear %q within 20s; it heard %v", event, app.events())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// connected, then disconnected.
	h.connect(alice, "twitter")
	within("account.connected twitter " + alice)
	if resp, body := h.do("DELETE", "/api/credentials/twitter/disconnect", alice, map[string]string{"Origin": h.origin}); resp.StatusCode != http.StatusOK {
		t.Fatalf("disconnect: %d %s", resp.StatusCode, body)
	}
	within("account.disconnected twitter " + alice)

	// A Facebook token only the user can renew: expiring ahead of its
	// end, then needs_reauth past it (the renewal jobs, on the sandbox's
	// clock).
	h.connect(dave, "facebook")
	// revoked: the platform refuses the grant when the token is read.
	h.connect(bob, "twitter")
	tokens := []string{}
	for _, u := range [][2]string{{dave, "facebook"}, {bob, "twitter"}} {
		if code, tok, body := h.fetchToken(h.internal, u[0], u[1], serviceToken); code != http.StatusOK {
			t.Fatalf("token of %v: %d %s", u, code, body)
		} else {
			tokens = append(tokens, tok.AccessToken)
		}
	}
	h.sandbox.SetFault("twitter.token", sandbox.Fault{InvalidGrant: true})
	h.sandbox.Clock().Advance(2 * time.Hour)
	if code, _, body := h.fetchToken(h.internal, bob, "twitter", serviceToken); code != http.StatusConflict {
		t.Fatalf("a refused grant: %d %s", code, body)
	}
	within("account.revoked twitter " + bob)

	// refresh_failed: the platform down for the one attempt allowed.
	h.sandbox.SetFault("twitter.token", sandbox.Fault{})
	h.connect(carol, "twitter")
	h.sandbox.SetFault("twitter.token", sandbox.Fault{ErrorRate: 1})
	h.sandbox.Clock().Advance(2 * time.Hour)
	within("account.refresh_failed twitter " + carol)

	h.sandbox.Clock().Advance(57 * 24 * time.Hour)
	within("account.expiring facebook " + dave)
	h.sandbox.Clock().Advance(4 * 24 * time.Hour)
	within("account.needs_reauth facebook " + dave)

	// In order per account, and each once (the app answered every time).
	want := map[string][]string{
		alice: {"account.connected", "account.disconnected"},
		bob:   {"account.connected", "account.revoked"},
		carol: {"account.connected", "account.refresh_failed"},
		dave:  {"account.connected", "account.expiring", "account.needs_reauth"},
	}
	got := map[string][]string{}
	// What the app heard, read under its lock, released before the
	// receiver must answer again below.
	func() {
		app.mu.Lock()
		defer app.mu.Unlock()
		for _, b := range app.bodies {
			got[b.UserID] = append(got[b.UserID], string(b.Type))
			if b.AccountID == "" || b.ID == "" || b.CreatedAt.IsZero() {
				t.Errorf("an event without its ids or time: %+v", b)
			}
		}
		for user, kinds := range want {
			if !slices.Equal(got[user], kinds) {
				t.Errorf("user %s: the app heard %v, want %v", user, got[user], kinds)
			}
		}
		if app.bad != 0 {
			t.Errorf("%d deliveries failed the signature check", app.bad)
		}
		for _, raw := range app.raw {
			for _, tok := range tokens {
				if tok == "" || strings.Contains(raw, tok) {
					t.Fatalf("a delivery holds a token: %s", raw)
				}
			}
		}
		for _, raw := range app.raw {
			if strings.Contains(raw, `"account.expiring"`) && !strings.Contains(raw, `"expires_at":"`) {
				t.Errorf("expiring without when: %s", raw)
			}
			if strings.Contains(raw, `"account.revoked"`) && !strings.Contains(raw, `"reason":"invalid_grant"`) {
				t.Errorf("revoked without its reason: %s", raw)
			}
		}
	}()
	// service-health says where the events go, and, once the last
	// delivery is marked done (the app heard it before it answered, so the
	// mark may still be on its way), that none is waiting.
	var resp *http.Response
	var health struct {
		Webhooks map[string]any `json:"webhooks"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var body []byte
		resp, body = h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
		health.Webhooks = nil
		json.Unmarshal(body, &health)
		if health.Webhooks["pending"] == float64(0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusOK || health.Webhooks["url"] != receiver.URL+"/hooks/credgate" || health.Webhooks["pending"] != float64(0) ||
		health.Webhooks["ok"] != true {
		t.Errorf("service-health: %d %v", resp.StatusCode, health.Webhooks)
	}
}

// The demo's webhook secret is public: refused on a public origin, like
// the other development secrets, and fine on loopback; a short secret
// and a webhook without one are refused everywhere.
func TestTheWebhookSecretMustBeTheAppsOwn(t *testing.T) {
	const demoSecret = "development-webhook-secret-do-not-use-in-production"
	h := newHarness(t, harnessOptions{globalOptions: "webhook http://127.0.0.1:1/hooks {\n\t\t\tsecret " + demoSecret + "\n\t\t}"})
	base := h.caddyfile("")
	load := func(src string) error {
		t.Helper()
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err != nil {
			return err
		}
		return caddylog.Load(t, cfg)
	}
	public := strings.Replace(base, "public_origin "+h.origin, "public_origin https://app.example.com", 1)
	err := load(public)
	if err == nil || !strings.Contains(err.Error(), "credgate webhook secret is the published development value") || strings.Contains(err.Error(), demoSecret) {
		t.Errorf("the demo's webhook secret on a public origin: %v", err)
	}
	for src, want := range map[string]string{
		strings.Replace(base, "secret "+demoSecret, "secret too-short", 1):                                                  "secret is shorter than 24 characters",
		strings.Replace(base, "secret "+demoSecret, "timeout 1s", 1):                                                        "secret is required",
		strings.Replace(base, "webhook http://127.0.0.1:1/hooks", "webhook htps://app/hook?key=app-secret-in-the-query", 1): `the URL is not an absolute http or https URL (scheme "htps")`,
		strings.Replace(base, "secret "+demoSecret, "secret "+demoSecret+"\n\t\t\tevents connected deleted", 1):             `unknown account event "deleted"`,
	} {
		if err := load(src); err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "app-secret-in-the-query") {
			t.Errorf("want %q (and never the URL's query), got %v", want, err)
		}
	}
}

func (h *harness) rows(sql string) []string {
	h.t.Helper()
	pool := pgtest.Pool(h.t, h.db)
	rows, err := pool.Query(context.Background(), sql)
	if err != nil {
		h.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}
