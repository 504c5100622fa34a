package sandbox_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/sandbox"
)

// The tests run in parallel, each with a server of its own: their
// clients are not on http.DefaultTransport (see testhttp).
var (
	client      = testhttp.Client()
	noRedirects = testhttp.NoRedirects()
)

func start(t *testing.T, cfg sandbox.Config) (*sandbox.Server, string) {
	t.Helper()
	s := sandbox.New(cfg)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

const twitterCallback = "http://localhost:8080/api/twitter/callback"

func challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func twitterAuthorize(base string, extra url.Values) string {
	q := url.Values{"response_type": {"code"}, "client_id": {"twitter-client-id"}, "redirect_uri": {twitterCallback},
		"state": {"st"}, "scope": {"tweet.read users.read offline.access"},
		"code_challenge": {challenge("verifier-verifier-verifier-verifier-verif")}, "code_challenge_method": {"S256"}}
	for k, v := range extra {
		q[k] = v
	}
	return base + "/twitter/i/oauth2/authorize?" + q.Encode()
}

func get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := noRedirects.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestConsentPageAndDecision(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{})
	resp, body := get(t, twitterAuthorize(base, nil))
	if resp.StatusCode != 200 || !strings.Contains(body, `<form method="post">`) ||
		!strings.Contains(body, `name="decision" value="approve"`) || !strings.Contains(body, `name="decision" value="deny"`) {
		t.Fatalf("consent page: %d\n%s", resp.StatusCode, body)
	}
	if !strings.Contains(body, "twitter-client-id") || !strings.Contains(body, "offline.access") {
		t.Error("consent page does not say who asks for what")
	}
	resp, err := noRedirects.PostForm(twitterAuthorize(base, nil), url.Values{"decision": {"approve"}, "sandbox_user": {"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != 302 || loc.Query().Get("code") == "" || loc.Query().Get("state") != "st" ||
		!strings.HasPrefix(loc.String(), twitterCallback+"?") {
		t.Fatalf("approve: %d %s", resp.StatusCode, loc)
	}
	if s.Stats()["twitter"].CodesIssued != 1 {
		t.Error("code not counted")
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true})
	cases := []struct {
		name     string
		extra    url.Values
		status   int
		errParam string
		reason   string
	}{
		{"unknown client", url.Values{"client_id": {"nobody"}}, 400, "", "unknown_client"},
		{"redirect off by one", url.Values{"redirect_uri": {twitterCallback + "/"}}, 400, "", "redirect_uri_mismatch"},
		{"no pkce", url.Values{"code_challenge": nil, "code_challenge_method": nil}, 302, "invalid_request", "pkce_required"},
		{"plain pkce", url.Values{"code_challenge_method": {"plain"}}, 302, "invalid_request", "pkce_required"},
		{"state over 500", url.Values{"state": {strings.Repeat("s", 501)}}, 302, "invalid_request", "state_too_long"},
		{"wrong response type", url.Values{"response_type": {"token"}}, 302, "unsupported_response_type", "unsupported_response_type"},
	}
	for _, tc := range cases {
		resp, _ := get(t, twitterAuthorize(base, tc.extra))
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != tc.status || loc.Query().Get("error") != tc.errParam || loc.Query().Get("code") != "" {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, loc)
		}
		if s.Stats()["twitter"].Rejected[tc.reason] == 0 {
			t.Errorf("%s: reason %s not counted: %v", tc.name, tc.reason, s.Stats()["twitter"].Rejected)
		}
	}
}

func redeemTwitter(base, code, verifier string) (*http.Response, map[string]any) {
	return twitterToken(base, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {twitterCallback}, "code_verifier": {verifier}})
}

// twitterToken posts form to Twitter's token endpoint as the registered
// client and returns the answer, decoded.
func twitterToken(base string, form url.Values) (*http.Response, map[string]any) {
	req, _ := http.NewRequest("POST", base+"/twitter/2/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("twitter-client-id", "twitter-client-secret")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp, m
}

func TestCodesAreSingleUseAndShortLived(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true})
	code := func() string {
		resp, _ := get(t, twitterAuthorize(base, nil))
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return loc.Query().Get("code")
	}
	const verifier = "verifier-verifier-verifier-verifier-verif"
	c := code()
	resp, body := redeemTwitter(base, c, verifier)
	if resp.StatusCode != 200 || body["access_token"] == nil || body["refresh_token"] == nil || body["expires_in"].(float64) != 7200 {
		t.Fatalf("redeem: %d %v", resp.StatusCode, body)
	}
	resp, body = redeemTwitter(base, c, verifier)
	if resp.StatusCode != 400 || body["error"] != "invalid_request" {
		t.Errorf("reuse: %d %v", resp.StatusCode, body)
	}
	c = code()
	s.Clock().Advance(sandbox.CodeTTL + time.Second)
	if resp, _ = redeemTwitter(base, c, verifier); resp.StatusCode != 400 {
		t.Errorf("expired code: %d", resp.StatusCode)
	}
	c = code()
	if resp, _ = redeemTwitter(base, c, verifier+"x"); resp.StatusCode != 400 {
		t.Errorf("wrong verifier: %d", resp.StatusCode)
	}
	rej := s.Stats()["twitter"].Rejected
	if rej["reused_code"] != 1 || rej["expired_code"] != 1 || rej["wrong_code_verifier"] != 1 {
		t.Errorf("rejections: %v", rej)
	}
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true})

	req, _ := http.NewRequest("PUT", base+"/_sandbox/faults/*.token", strings.NewReader(`{"html_502":true,"latency":"10ms"}`))
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("set fault: %v %v", resp.StatusCode, err)
	}
	resp, body := get(t, base+"/_sandbox/stats")
	_ = body
	r, _ := client.Post(base+"/linkedin/oauth/v2/accessToken", "application/x-www-form-urlencoded", nil)
	if r.StatusCode != 502 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Errorf("wildcard fault not applied: %d", r.StatusCode)
	}
	req, _ = http.NewRequest("DELETE", base+"/_sandbox/faults/*.token", nil)
	client.Do(req)
	r, _ = client.Post(base+"/linkedin/oauth/v2/accessToken", "application/x-www-form-urlencoded", nil)
	if r.StatusCode != 401 {
		t.Errorf("after clearing the fault: %d, want 401 (no client credentials)", r.StatusCode)
	}

	before := s.Clock().Now()
	r, _ = client.Post(base+"/_sandbox/clock?advance=24h", "", nil)
	if r.StatusCode != 200 || s.Clock().Now().Sub(before) < 24*time.Hour {
		t.Errorf("clock: %d", r.StatusCode)
	}
	if r, _ = client.Post(base+"/_sandbox/clock?advance=-1h", "", nil); r.StatusCode != 400 {
		t.Errorf("negative advance: %d", r.StatusCode)
	}

	resp, body = get(t, base+"/_sandbox/stats")
	var stats map[string]sandbox.PlatformStats
	if err := json.Unmarshal([]byte(body), &stats); err != nil || resp.StatusCode != 200 {
		t.Fatalf("stats: %v %s", err, body)
	}
	if stats["linkedin"].Rejected["fault_html_502"] != 1 || stats["linkedin"].Rejected["bad_client_credentials"] != 1 || len(stats) != 4 {
		t.Errorf("stats: %+v", stats)
	}
	resp, body = get(t, base+"/_sandbox/apps")
	if !strings.Contains(body, "instagram-client-secret") || !strings.Contains(body, "http://localhost:8080/api/auth/oauth/instagram/callback") {
		t.Errorf("apps: %s", body)
	}
	if resp, _ = get(t, base+"/nowhere/at/all"); resp.StatusCode != 404 {
		t.Errorf("unknown path: %d", resp.StatusCode)
	}
}

// Facebook's long-lived exchange shares the token URL but has its own
// fault endpoint name.
func TestFacebookExchangeFault(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{})
	exchange := base + "/facebook/v22.0/oauth/access_token?" + url.Values{"grant_type": {"fb_exchange_token"},
		"client_id": {"facebook-client-id"}, "client_secret": {"facebook-client-secret"}, "fb_exchange_token": {"t"}}.Encode()
	s.SetFault("facebook.exchange", sandbox.Fault{InvalidGrant: true})
	if resp, _ := get(t, exchange); resp.StatusCode != 400 || s.Stats()["facebook"].Rejected["fault_invalid_grant"] != 1 {
		t.Errorf("exchange fault: %d %v", resp.StatusCode, s.Stats()["facebook"].Rejected)
	}
	code := base + "/facebook/v22.0/oauth/access_token?" + url.Values{"client_id": {"facebook-client-id"},
		"client_secret": {"facebook-client-secret"}, "code": {"nope"}, "redirect_uri": {"http://localhost:8080/api/facebook/callback"}}.Encode()
	if get(t, code); s.Stats()["facebook"].Rejected["unknown_code"] != 1 {
		t.Errorf("the exchange fault hit the code exchange: %v", s.Stats()["facebook"].Rejected)
	}
}

// GET / is a page listing the endpoints, the apps, the active faults and
// the counters.
func TestLandingPage(t *testing.T) {
	t.Parallel()
	s := sandbox.New(sandbox.Config{Apps: sandbox.DefaultApps("http://localhost:8080")})
	s.SetFault("linkedin.token", sandbox.Fault{ErrorRate: 0.2})
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := client.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"/i/oauth2/authorize", "twitter-client-id", "http://localhost:8080/api/linkedin/callback", "linkedin.token", "0.2"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("landing page lacks %q", want)
		}
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("landing page: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// The content API checks the token as X does: a token without
// tweet.write gets X's 403, a live one with it posts, an invalidated or
// expired one gets X's 401.
func TestPostChecksTokenAndScope(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true})
	token := func(scope string) string {
		resp, _ := get(t, twitterAuthorize(base, url.Values{"scope": {scope}}))
		loc, _ := url.Parse(resp.Header.Get("Location"))
		_, m := redeemTwitter(base, loc.Query().Get("code"), "verifier-verifier-verifier-verifier-verif")
		tok, _ := m["access_token"].(string)
		if tok == "" {
			t.Fatalf("no token: %v", m)
		}
		return tok
	}
	post := func(tok string) (int, string) {
		req, _ := http.NewRequest("POST", base+"/twitter/2/tweets", strings.NewReader(`{"text":"hi"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(token("tweet.read users.read")); code != 403 || !strings.Contains(body, `"title":"Forbidden"`) {
		t.Fatalf("without tweet.write: %d %s", code, body)
	}
	writer := token("tweet.read tweet.write users.read")
	if code, body := post(writer); code != 201 || !strings.Contains(body, `"data"`) || s.Stats()["twitter"].Posts != 1 {
		t.Fatalf("with tweet.write: %d %s", code, body)
	}
	s.InvalidateAccessTokens("twitter")
	if code, body := post(writer); code != 401 || !strings.Contains(body, `"title":"Unauthorized"`) {
		t.Fatalf("invalidated: %d %s", code, body)
	}
	expiring := token("tweet.write")
	s.Clock().Advance(3 * time.Hour)
	if code, _ := post(expiring); code != 401 {
		t.Fatalf("expired: %d", code)
	}
}

// X's POST /2/tweets takes a JSON body, as the app (and egress) sends
// it: the text is read from the JSON and echoed back. A form body gets
// X's own 400 and posts nothing (issue 26, item 15: the sandbox read a
// form field, so a JSON post came back with empty text).
func TestTwitterPostReadsJSONAsXDoes(t *testing.T) {
	t.Parallel()
	s, base := start(t, sandbox.Config{AutoApprove: true})
	resp, _ := get(t, twitterAuthorize(base, url.Values{"scope": {"tweet.write users.read"}}))
	loc, _ := url.Parse(resp.Header.Get("Location"))
	_, m := redeemTwitter(base, loc.Query().Get("code"), "verifier-verifier-verifier-verifier-verif")
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatalf("no token: %v", m)
	}
	for _, c := range []struct {
		name, contentType, body string
		status                  int
		text, message           string
	}{
		{"json", "application/json", `{"text":"hello from the app"}`, 201, "hello from the app", ""},
		{"json with a charset", "application/json; charset=utf-8", `{"text":"héllo"}`, 201, "héllo", ""},
		{"form", "application/x-www-form-urlencoded", "text=hello", 400, "", "Requests with bodies must have content-type of application/json."},
		{"no content type", "", `{"text":"hello"}`, 400, "", "Requests with bodies must have content-type of application/json."},
		{"malformed json", "application/json", `{"text":`, 400, "", ""},
	} {
		before := s.Stats()["twitter"].Posts
		req, _ := http.NewRequest("POST", base+"/twitter/2/tweets", strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if c.contentType != "" {
			req.Header.Set("Content-Type", c.contentType)
		} else {
			req.Header["Content-Type"] = nil
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Data struct {
				ID   string `json:"id"`
				Text string `json:"text"`
			} `json:"data"`
			Errors []struct {
				Message string `json:"message"`
			} `json:"errors"`
			Title string `json:"title"`
			Type  string `json:"type"`
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		posted := s.Stats()["twitter"].Posts - before
		switch {
		case resp.StatusCode != c.status:
			t.Errorf("%s: %d, want %d (%+v)", c.name, resp.StatusCode, c.status, got)
		case c.status == 201 && (got.Data.Text != c.text || got.Data.ID == "" || posted != 1):
			t.Errorf("%s: %+v, %d posts; want text %q and one post", c.name, got, posted, c.text)
		case c.status == 400 && (got.Title != "Invalid Request" || got.Type != "https://api.twitter.com/2/problems/invalid-request" || len(got.Errors) != 1 || posted != 0):
			t.Errorf("%s: %+v, %d posts; want X's invalid request and no post", c.name, got, posted)
		case c.message != "" && got.Errors[0].Message != c.message:
			t.Errorf("%s: message %q, want %q", c.name, got.Errors[0].Message, c.message)
		}
	}
}
