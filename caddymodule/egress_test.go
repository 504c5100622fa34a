package caddymodule

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/sandbox"
)

// egressCall sends one API call through the egress site as user.
func (h *harness) egressCall(method, path, user, bearer, body string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.egress+path, strings.NewReader(body))
	if body == "" {
		req.Body = nil
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if user != "" {
		req.Header.Set("X-Credgate-User", user)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// stayedHome reports whether an answer came from somewhere other than the
// host a request named: Caddy's empty answer for a host no site serves,
// credgate's refusal, or the configured API base (the sandbox, the only
// server that knows the token).
func stayedHome(status int, body string) bool {
	return (status == 200 && body == "") || status == 400 ||
		(status == 200 && strings.Contains(body, `"username":"sandbox-user"`))
}

// postPaths are each platform's posting call, as the app would make it
// to the platform's API, under /{platform}.
var postPaths = map[string]string{
	"twitter":   "/twitter/2/tweets",
	"linkedin":  "/linkedin/v2/ugcPosts",
	"facebook":  "/facebook/v22.0/page-1/feed",
	"instagram": "/instagram/v22.0/ig-user-1/media",
}

// A post through the egress proxy works on every platform, with the
// user's token added by credgate; the app sends none.
func TestEgressPostsOnEveryPlatform(t *testing.T) {
	h := newHarness(t, harnessOptions{egress: "service_token " + serviceToken, metrics: true})
	for p := range postPaths {
		h.connect(alice, p)
	}
	for p, path := range postPaths {
		before := h.sandbox.Stats()[p].Posts
		code, body := h.egressCall("POST", path+"?fields=id", alice, serviceToken, `{"text":"hello"}`)
		if code/100 != 2 || !strings.Contains(body, `"id"`) {
			t.Fatalf("%s: %d %s", p, code, body)
		}
		if got := h.sandbox.Stats()[p].Posts - before; got != 1 {
			t.Fatalf("%s: %d posts at the platform, want 1", p, got)
		}
	}
	// A read, and the platform's own answers pass through unchanged.
	if code, body := h.egressCall("GET", "/twitter/2/users/me", alice, serviceToken, ""); code != 200 || !strings.Contains(body, `"data"`) {
		t.Fatalf("users/me: %d %s", code, body)
	}
	if code, body := h.egressCall("GET", "/twitter/2/no-such-endpoint", alice, serviceToken, ""); code != 404 {
		t.Fatalf("a platform 404: %d %s", code, body)
	}
	// No audit row per call.
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE details->>'trigger' = 'egress'`); n != 0 {
		t.Fatalf("%d audit rows for calls that needed no renewal", n)
	}
	if m := h.scrape(); !strings.Contains(m, `credgate_egress_requests_total{platform="twitter",status_class="2xx"} 2`) {
		t.Fatal("credgate_egress_requests_total does not count the calls")
	}
}

// An expired token is renewed before the call; a token the platform
// refuses is renewed once and the call sent once more; a user who must
// reconnect gets 409.
func TestEgressRenewsTokens(t *testing.T) {
	h := newHarness(t, harnessOptions{egress: "service_token " + serviceToken})
	h.connect(alice, "twitter")
	h.connect(alice, "facebook")

	h.sandbox.Clock().Advance(2 * time.Hour)
	before := h.sandbox.Stats()["twitter"].Refreshes
	if code, body := h.egressCall("POST", postPaths["twitter"], alice, serviceToken, `{"text":"after expiry"}`); code != 201 {
		t.Fatalf("after expiry: %d %s", code, body)
	}
	if got := h.sandbox.Stats()["twitter"].Refreshes - before; got != 1 {
		t.Fatalf("%d renewals for an expired token, want 1", got)
	}

	// A token refused right after it was issued is not renewed again: the
	// refusal is about something else, and the app sees it as it is.
	h.sandbox.InvalidateAccessTokens("twitter")
	before = h.sandbox.Stats()["twitter"].Refreshes
	if code, body := h.egressCall("POST", postPaths["twitter"], alice, serviceToken, `{"text":"x"}`); code != 401 || !strings.Contains(body, "Unauthorized") {
		t.Fatalf("a fresh token refused: %d %s", code, body)
	}
	if got := h.sandbox.Stats()["twitter"].Refreshes - before; got != 0 {
		t.Fatalf("%d renewals of a token refused moments after it was issued", got)
	}

	// Some minutes later the platform invalidates the access token behind
	// credgate's back: the first call gets 401, credgate renews and
	// retries (the app said the post is safe to send twice), the app sees
	// the post succeed.
	h.sandbox.Clock().Advance(2 * time.Minute)
	if n := h.sandbox.InvalidateAccessTokens("twitter"); n != 0 {
		t.Fatalf("%d live tokens after the earlier invalidation", n)
	}
	before = h.sandbox.Stats()["twitter"].Refreshes
	if code, _, body := h.egressCallWith("POST", postPaths["twitter"], alice, `{"text":"after a 401"}`, map[string]string{"X-Credgate-Retry": "safe"}); code != 201 {
		t.Fatalf("after a 401: %d %s", code, body)
	}
	if got := h.sandbox.Stats()["twitter"].Refreshes - before; got != 1 {
		t.Fatalf("%d renewals after a 401, want 1", got)
	}
	// One audit row per renewal (the one after expiry, the one after the
	// 401), written by the refresher; none per call.
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND details->>'trigger' = 'egress' AND status = 'success'`); n != 2 {
		t.Fatalf("%d refresh audit rows, want 2", n)
	}

	// The renewal after a refusal fails for a reason that may pass: the
	// app gets 503 with Retry-After, not the refused token's 401.
	h.sandbox.Clock().Advance(2 * time.Minute)
	h.sandbox.InvalidateAccessTokens("twitter")
	h.sandbox.SetFault("twitter.token", sandbox.Fault{ErrorRate: 1})
	if code, body := h.egressCall("POST", postPaths["twitter"], alice, serviceToken, `{"text":"x"}`); code != 503 || errorCode([]byte(body)) != "provider_unavailable" {
		t.Fatalf("a failed renewal after a refusal: %d %s", code, body)
	}
	h.sandbox.SetFault("twitter.token", sandbox.Fault{})

	// Facebook cannot be renewed without the user once its token is dead.
	h.sandbox.Clock().Advance(2 * time.Minute)
	h.sandbox.InvalidateAccessTokens("facebook")
	if code, body := h.egressCall("POST", postPaths["facebook"], alice, serviceToken, `{"message":"x"}`); code != http.StatusConflict || errorCode([]byte(body)) != "needs_reauth" {
		t.Fatalf("facebook with a dead token: %d %s", code, body)
	}
	// Not connected.
	if code, body := h.egressCall("GET", "/linkedin/v2/userinfo", alice, serviceToken, ""); code != 404 || errorCode([]byte(body)) != "not_connected" {
		t.Fatalf("not connected: %d %s", code, body)
	}
}

// Fifty calls at once on an expired token: one renewal, no refresh token
// used twice, every call served.
func TestEgressConcurrentCallsOnAnExpiredToken(t *testing.T) {
	h := newHarness(t, harnessOptions{egress: "service_token " + serviceToken})
	h.connect(alice, "twitter")
	h.sandbox.Clock().Advance(2 * time.Hour)
	before := h.sandbox.Stats()["twitter"]
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for range 50 {
		wg.Go(func() {
			code, _ := h.egressCall("GET", "/twitter/2/users/me", alice, serviceToken, "")
			codes <- code
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a call answered %d", c)
		}
	}
	after := h.sandbox.Stats()["twitter"]
	if after.Refreshes-before.Refreshes != 1 || after.RefreshReuse != before.RefreshReuse {
		t.Fatalf("%d renewals, %d refresh-token reuses; want 1 and 0", after.Refreshes-before.Refreshes, after.RefreshReuse-before.RefreshReuse)
	}
}

// Only the configured API hosts are reached: no absolute URI, dot
// segments, encoded slashes, @, Host header or unknown platform leads
// anywhere else; and the service token is required.
func TestEgressRefusesEverythingElse(t *testing.T) {
	h := newHarness(t, harnessOptions{egress: "service_token " + serviceToken})
	h.connect(alice, "twitter")
	for _, path := range []string{
		"/twitter/../../etc/passwd", "/twitter/2/%2e%2e/%2e%2e/x", "/twitter/%2F%2Fevil.example/x", "/twitter/@evil.example/x",
		"/twitter//evil.example/x", "/twitter/2/users/me%5c..%5cx",
	} {
		code, body := h.egressCall("GET", path, alice, serviceToken, "")
		if code != 400 && code != 404 {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if code, body := h.egressCall("GET", "/myspace/api/me", alice, serviceToken, ""); code != 404 || errorCode([]byte(body)) != "unknown_platform" {
		t.Errorf("unknown platform: %d %s", code, body)
	}
	// An absolute-form request URI, written by hand: refused, or served
	// by the configured API base (the sandbox, the only server that knows
	// the token), never sent to the host it names.
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.egress, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET http://evil.example/twitter/2/users/me HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer %s\r\nX-Credgate-User: %s\r\nConnection: close\r\n\r\n", serviceToken, alice)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	conn.Close()
	if !stayedHome(resp.StatusCode, string(raw)) {
		t.Errorf("an absolute-form request URI: %d %s", resp.StatusCode, raw)
	}
	// A Host header does not move the target: the call still goes to the
	// sandbox (which knows the token).
	req, _ := http.NewRequest("GET", h.egress+"/twitter/2/users/me", nil)
	req.Host = "evil.example"
	req.Header.Set("Authorization", "Bearer "+serviceToken)
	req.Header.Set("X-Credgate-User", alice)
	if resp, err := client.Do(req); err == nil {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !stayedHome(resp.StatusCode, string(raw)) {
			t.Errorf("with a Host header: %d %s", resp.StatusCode, raw)
		}
	}
	for _, bearer := range []string{"", "wrong-token-wrong-token"} {
		if code, body := h.egressCall("GET", "/twitter/2/users/me", alice, bearer, ""); code != 401 || errorCode([]byte(body)) != "unauthorized" {
			t.Errorf("service token %q: %d %s", bearer, code, body)
		}
	}
	if code, body := h.egressCall("GET", "/twitter/2/users/me", "not-a-uuid", serviceToken, ""); code != 400 || errorCode([]byte(body)) != "invalid_user" {
		t.Errorf("bad user: %d %s", code, body)
	}
	// Not configured on the public origin: the app answers there.
	resp2, body := h.do("GET", "/twitter/2/users/me", "", map[string]string{"Authorization": "Bearer " + serviceToken, "X-Credgate-User": alice})
	if resp2.StatusCode != 200 || !strings.HasPrefix(string(body), "app saw") {
		t.Errorf("on the public origin: %d %s", resp2.StatusCode, body)
	}
}

// egressCallWith is egressCall with more request headers, returning the
// answer's headers too.
func (h *harness) egressCallWith(method, path, user, body string, headers map[string]string) (int, http.Header, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.egress+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+serviceToken)
	req.Header.Set("X-Credgate-User", user)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

// A POST the platform refused for its token is not sent again unless the
// app says it is safe to repeat (X-Credgate-Retry: safe): the platform may
// have acted on it, and a second send would post twice. The token is
// renewed all the same, so the app's own retry works. Issue 26, item 6.
func TestEgressResendsAPostOnlyWhenTheAppSaysItIsSafe(t *testing.T) {
	h := newHarness(t, harnessOptions{egress: "service_token " + serviceToken})
	h.connect(alice, "twitter")
	for _, tc := range []struct {
		platform, body string
		headers        map[string]string
		refused        int // the platform's refusal passed through when not resent
		sends, posts   int
	}{
		{"twitter", `{"text":"once"}`, nil, http.StatusUnauthorized, 1, 0},
		{"twitter", `{"text":"safe"}`, map[string]string{"X-Credgate-Retry": "safe"}, 0, 2, 1},
	} {
		// Some minutes after the token was issued, the platform drops it
		// (of the sandbox's platforms only X can renew a dropped token:
		// Instagram renews with the live token, Facebook not at all).
		h.sandbox.Clock().Advance(2 * time.Minute)
		h.sandbox.InvalidateAccessTokens(tc.platform)
		before := h.sandbox.Stats()[tc.platform]
		code, header, body := h.egressCallWith("POST", postPaths[tc.platform], alice, tc.body, tc.headers)
		after := h.sandbox.Stats()[tc.platform]
		sends := after.Posts - before.Posts + after.Rejected["bad_access_token"] - before.Rejected["bad_access_token"]
		if sends != tc.sends || after.Posts-before.Posts != tc.posts || after.Refreshes-before.Refreshes != 1 {
			t.Fatalf("%s %v: %d sends, %d posts, %d renewals at the platform; want %d, %d and 1 (%d %s)", tc.platform, tc.headers,
				sends, after.Posts-before.Posts, after.Refreshes-before.Refreshes, tc.sends, tc.posts, code, body)
		}
		if tc.refused != 0 {
			if code != tc.refused || header.Get("X-Credgate-Renewed") != "true" {
				t.Fatalf("%s not resent: %d %v %s, want the platform's %d with X-Credgate-Renewed", tc.platform, code, header, body, tc.refused)
			}
			// The app's own retry goes out with the renewed token.
			if code, _, body := h.egressCallWith("POST", postPaths[tc.platform], alice, tc.body, nil); code/100 != 2 {
				t.Fatalf("%s: the app's retry: %d %s", tc.platform, code, body)
			}
		} else if code/100 != 2 {
			t.Fatalf("%s resent: %d %s", tc.platform, code, body)
		}
	}
	// A GET is idempotent: resent after the renewal without being asked.
	h.sandbox.Clock().Advance(2 * time.Minute)
	h.sandbox.InvalidateAccessTokens("twitter")
	if code, _, body := h.egressCallWith("GET", "/twitter/2/users/me", alice, "", nil); code != 200 {
		t.Fatalf("a GET after a refusal: %d %s", code, body)
	}
	if code, _, body := h.egressCallWith("POST", postPaths["twitter"], alice, `{}`, map[string]string{"X-Credgate-Retry": "yes"}); code != 400 || errorCode([]byte(body)) != "invalid_retry" {
		t.Fatalf("X-Credgate-Retry: yes: %d %s, want 400 invalid_retry", code, body)
	}
}

// slowBodyCall sends a POST whose body stops after its first bytes and
// returns the answer, or status 0 if none came within wait.
func (h *harness) slowBodyCall(wait time.Duration) (int, http.Header, string) {
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.egress, "http://"))
	if err != nil {
		h.t.Error(err)
		return 0, nil, ""
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nX-Credgate-User: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"text\":", postPaths["twitter"], strings.TrimPrefix(h.egress, "http://"), serviceToken, alice)
	conn.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, err.Error()
	}
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

// A request body that does not arrive within body_timeout is answered
// 408, and no caller has more than max_in_flight calls in flight: a
// hundred slow-body POSTs with the service token no longer hold their
// connections open. Issue 26, item 7.
func TestEgressBoundsSlowBodiesAndCallsInFlight(t *testing.T) {
	h := newHarness(t, harnessOptions{egress: "service_token " + serviceToken + "\n\t\tbody_timeout 1s\n\t\tmax_in_flight 4"})
	h.connect(alice, "twitter")

	// The hundred slow POSTs of the report, at once: each gets its answer
	// (408 once its body is overdue, or 429 beyond the four in flight),
	// none waits out the client's 30 s.
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]int{}
	for range 100 {
		wg.Go(func() {
			code, header, body := h.slowBodyCall(30 * time.Second)
			key := fmt.Sprintf("%d %s", code, errorCode([]byte(body)))
			if code == http.StatusTooManyRequests && header.Get("Retry-After") == "" {
				key += " without Retry-After"
			}
			mu.Lock()
			answers[key]++
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	if answers["408 request_timeout"]+answers["429 too_many_requests"] != 100 || answers["408 request_timeout"] == 0 {
		t.Fatalf("100 slow-body POSTs answered %v in %v; want each 408 request_timeout or 429 too_many_requests", answers, took)
	}
	t.Logf("100 slow-body POSTs answered %v in %v", answers, took)
	if st := h.sandbox.Stats()["twitter"]; st.Posts != 0 || st.Rejected["bad_access_token"] != 0 {
		t.Fatalf("a POST whose body never came reached the platform: %+v", st)
	}
	// Their slots are free again; and the bound is on the body only: a
	// platform slower than body_timeout is still waited for.
	h.sandbox.SetFault("twitter.api", sandbox.Fault{Latency: sandbox.Duration(2 * time.Second)})
	if code, body := h.egressCall("POST", postPaths["twitter"], alice, serviceToken, `{"text":"after"}`); code != 201 {
		t.Fatalf("a call after the slow ones, to a slow platform: %d %s", code, body)
	}
	h.sandbox.SetFault("twitter.api", sandbox.Fault{})

	// Calls slow at the platform hold their slots too: with four in
	// flight, the fifth is 429 with Retry-After at once.
	h.sandbox.SetFault("twitter.profile", sandbox.Fault{Latency: sandbox.Duration(time.Minute)})
	ctx, cancel := context.WithCancel(context.Background())
	var slow sync.WaitGroup
	for range 4 {
		slow.Go(func() {
			// Until it holds a place (the test's own calls may hold one
			// for a moment) and is cancelled.
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", h.egress+"/twitter/2/users/me", nil)
				req.Header.Set("Authorization", "Bearer "+serviceToken)
				req.Header.Set("X-Credgate-User", alice)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusTooManyRequests {
					return
				}
			}
		})
	}
	var header http.Header
	waitUntil(t, 20*time.Second, func() bool {
		var code int
		code, header, _ = h.egressCallWith("POST", postPaths["twitter"], alice, `{"text":"fifth"}`, nil)
		return code == http.StatusTooManyRequests
	})
	if header.Get("Retry-After") == "" || header.Get("Content-Type") != "application/json" {
		t.Fatalf("429 without Retry-After or a JSON body: %v", header)
	}
	cancel()
	slow.Wait()
	h.sandbox.SetFault("twitter.profile", sandbox.Fault{})
	waitUntil(t, 20*time.Second, func() bool {
		code, _, _ := h.egressCallWith("GET", "/twitter/2/users/me", alice, "", nil)
		return code == http.StatusOK
	})
}

// A platform that takes the call and does not answer is given up on
// after response_header_timeout: 502 provider_unavailable, counted, and
// the call's place is free again. A platform slower than body_timeout but
// within response_header_timeout is still waited for (above).
func TestEgressGivesUpOnAPlatformThatDoesNotAnswer(t *testing.T) {
	h := newHarness(t, harnessOptions{egress: "service_token " + serviceToken + "\n\t\tresponse_header_timeout 1s\n\t\tmax_in_flight 1"})
	h.connect(alice, "twitter")
	h.sandbox.SetFault("twitter.api", sandbox.Fault{Latency: sandbox.Duration(5 * time.Second)})
	start := time.Now()
	code, body := h.egressCall("POST", postPaths["twitter"], alice, serviceToken, `{"text":"slow"}`)
	took := time.Since(start)
	if code != http.StatusBadGateway || errorCode([]byte(body)) != "provider_unavailable" {
		t.Fatalf("a platform that does not answer: %d %s", code, body)
	}
	if took > 4*time.Second {
		t.Errorf("answered after %v; response_header_timeout is 1s", took)
	}
	// The one place (max_in_flight 1) is free again.
	h.sandbox.SetFault("twitter.api", sandbox.Fault{})
	if code, body := h.egressCall("POST", postPaths["twitter"], alice, serviceToken, `{"text":"after"}`); code != http.StatusCreated {
		t.Fatalf("the next call: %d %s", code, body)
	}
}
