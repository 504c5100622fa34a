package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/secret"
)

// env is a sandbox on real HTTP plus providers pointed at it.
type env struct {
	t    *testing.T
	sb   *sandbox.Server
	base string
}

func newEnv(t *testing.T, cfg sandbox.Config) *env {
	t.Helper()
	sb := sandbox.New(cfg)
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return &env{t: t, sb: sb, base: srv.URL}
}

const appOrigin = "http://localhost:8080"

func (e *env) provider(platform string, mutate ...func(*oauth.Config)) *oauth.Provider {
	e.t.Helper()
	auth, token, api, err := oauth.SandboxURLs(platform, e.base)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := oauth.Config{
		ClientID: platform + "-client-id", ClientSecret: secret.New(platform + "-client-secret"),
		RedirectURL: appOrigin + "/api/auth/oauth/" + platform + "/callback",
		AuthURL:     auth, TokenURL: token, APIBase: api, Now: e.sb.Clock().Now,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	p, err := oauth.New(platform, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// noRedirects is not on http.DefaultTransport: a parallel test's
// request failed with "connection broken: CloseIdleConnections called"
// once (see testhttp).
var noRedirects = testhttp.NoRedirects()

// authorize follows the authorize URL (auto-approved, or with an explicit
// decision posted to the consent form) and returns the callback query and
// the raw Location.
func (e *env) authorize(start oauth.Start, decision string) (url.Values, string) {
	e.t.Helper()
	var resp *http.Response
	var err error
	if decision == "" {
		resp, err = noRedirects.Get(start.URL)
	} else {
		u, _ := url.Parse(start.URL)
		resp, err = noRedirects.PostForm(start.URL, url.Values{"decision": {decision}, "sandbox_user": {"alice"}})
		_ = u
	}
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("authorize answered %d, want 302", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	u, err := url.Parse(loc)
	if err != nil {
		e.t.Fatal(err)
	}
	return u.Query(), loc
}

func codeOf(err error) oauth.Code {
	var e *oauth.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return "not an *oauth.Error"
}

func wantCode(t *testing.T, err error, want oauth.Code) {
	t.Helper()
	if got := codeOf(err); got != want {
		t.Fatalf("error %v: code %s, want %s", err, got, want)
	}
}

func connect(t *testing.T, e *env, p *oauth.Provider) oauth.TokenSet {
	t.Helper()
	start, err := p.Begin()
	if err != nil {
		t.Fatal(err)
	}
	q, _ := e.authorize(start, "")
	if q.Get("state") != start.State.Reveal() {
		t.Fatalf("state came back as %q", q.Get("state"))
	}
	tok, err := p.Complete(context.Background(), secret.New(q.Get("code")), start.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTwitterFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sandbox.Config{AutoApprove: true})
	p := e.provider("twitter")
	start, _ := p.Begin()
	u, _ := url.Parse(start.URL)
	if u.Query().Get("code_challenge_method") != "S256" || u.Query().Get("code_challenge") == "" || len(start.State.Reveal()) < 43 {
		t.Fatalf("authorize URL lacks PKCE or a 32-byte state: %s", start.URL)
	}
	tok := connect(t, e, p)
	if tok.RefreshToken.IsZero() || tok.PlatformUserID == "" || tok.Username != "sandbox-user" ||
		time.Until(tok.Expiry) < 119*time.Minute || time.Until(tok.Expiry) > 121*time.Minute {
		t.Fatalf("token set: %+v expiry in %v", tok, time.Until(tok.Expiry))
	}

	// Refresh rotates the refresh token.
	next, err := p.Refresh(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if next.RefreshToken.Equal(tok.RefreshToken) || next.AccessToken.Equal(tok.AccessToken) || next.PlatformUserID != tok.PlatformUserID {
		t.Fatal("refresh did not rotate the tokens")
	}
	// Reusing the old refresh token kills the family: the new one dies too.
	_, err = p.Refresh(context.Background(), tok)
	wantCode(t, err, oauth.CodeInvalidGrant)
	_, err = p.Refresh(context.Background(), next)
	wantCode(t, err, oauth.CodeInvalidGrant)
	if st := e.sb.Stats()["twitter"]; st.RefreshReuse != 1 || st.Refreshes != 1 {
		t.Errorf("stats: %+v", st)
	}

	// A fresh grant, then revoke.
	tok = connect(t, e, p)
	if err := p.Revoke(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Identify(context.Background(), tok.AccessToken); codeOf(err) != oauth.CodeInvalidClient {
		t.Errorf("profile after revoke: %v", err)
	}
	if st := e.sb.Stats()["twitter"]; st.Revocations != 1 || st.CodesRedeemed != 2 {
		t.Errorf("stats: %+v", st)
	}
}

func TestLinkedInFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sandbox.Config{AutoApprove: true})
	p := e.provider("linkedin")
	start, _ := p.Begin()
	if strings.Contains(start.URL, "code_challenge") || !start.Verifier.IsZero() {
		t.Fatalf("LinkedIn flow carries PKCE: %s", start.URL)
	}
	q, _ := e.authorize(start, "")
	// Even a caller that passes a verifier must not make the client send it.
	tok, err := p.Complete(context.Background(), secret.New(q.Get("code")), secret.New("stray-verifier"))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expiry); d < 59*24*time.Hour || tok.Username != "sandbox-user" || tok.PlatformUserID == "" {
		t.Fatalf("token set: %+v (expires in %v)", tok, d)
	}
	_, err = p.Refresh(context.Background(), tok)
	wantCode(t, err, oauth.CodeNeedsReauth)
	revokeErr := p.Revoke(context.Background(), tok)
	wantCode(t, revokeErr, oauth.CodeUnsupported)
	if !errors.Is(revokeErr, oauth.ErrRevokeUnsupported) {
		t.Error("errors.Is(Revoke's error, ErrRevokeUnsupported) is false")
	}
	if errors.Is(revokeErr, &oauth.Error{Code: oauth.CodeInvalidGrant}) {
		t.Error("an unsupported revoke matches invalid_grant")
	}
	if e.sb.Stats()["linkedin"].Rejected["code_verifier_sent"] != 0 {
		t.Error("the client sent a code_verifier to LinkedIn")
	}

	// An app approved for refresh tokens can refresh.
	apps := sandbox.DefaultApps(appOrigin)
	for i := range apps {
		apps[i].RefreshTokens = true
	}
	e2 := newEnv(t, sandbox.Config{AutoApprove: true, Apps: apps})
	p2 := e2.provider("linkedin")
	tok = connect(t, e2, p2)
	if _, err := p2.Refresh(context.Background(), tok); err != nil {
		t.Fatalf("approved app refresh: %v", err)
	}
}

func TestFacebookFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sandbox.Config{AutoApprove: true})
	p := e.provider("facebook")
	start, _ := p.Begin()
	q, loc := e.authorize(start, "")
	if !strings.HasSuffix(loc, "#_=_") {
		t.Fatalf("Facebook redirect lacks #_=_: %s", loc)
	}
	// A code copied with the fragment still works.
	tok, err := p.Complete(context.Background(), secret.New(q.Get("code")+"#_=_"), start.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expiry); d < 59*24*time.Hour || !tok.RefreshToken.IsZero() {
		t.Fatalf("want a long-lived token and no refresh token, got expiry in %v", d)
	}
	if st := e.sb.Stats()["facebook"]; st.TokensIssued != 2 || st.Refreshes != 1 {
		t.Errorf("short + long-lived exchange not seen: %+v", st)
	}
	next, err := p.Refresh(context.Background(), tok)
	if err != nil || next.AccessToken.Equal(tok.AccessToken) {
		t.Fatalf("re-exchange: %v", err)
	}
	if err := p.Revoke(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	_, err = p.Refresh(context.Background(), next)
	wantCode(t, err, oauth.CodeNeedsReauth)
}

func TestInstagramFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sandbox.Config{AutoApprove: true})
	p := e.provider("instagram")
	start, _ := p.Begin()
	q, loc := e.authorize(start, "")
	if !strings.HasSuffix(loc, "#_") {
		t.Fatalf("Instagram redirect lacks #_: %s", loc)
	}
	tok, err := p.Complete(context.Background(), secret.New(q.Get("code")+"#_"), secret.Value{})
	if err != nil {
		t.Fatal(err)
	}
	// Instagram user ids exceed 2^53: a float64 would have rounded it.
	if len(tok.PlatformUserID) != 17 || !strings.HasPrefix(tok.PlatformUserID, "178414") || strings.ContainsAny(tok.PlatformUserID, "e.") {
		t.Errorf("user id %q lost precision", tok.PlatformUserID)
	}
	if d := time.Until(tok.Expiry); d < 59*24*time.Hour {
		t.Fatalf("want a long-lived token, expiry in %v", d)
	}
	_, err = p.Refresh(context.Background(), tok)
	wantCode(t, err, oauth.CodeInvalidRequest) // under 24 h old
	if e.sb.Stats()["instagram"].Rejected["token_too_young"] != 1 {
		t.Error("refresh under 24 h was not refused for that reason")
	}
	e.sb.Clock().Advance(25 * time.Hour)
	next, err := p.Refresh(context.Background(), tok)
	if err != nil || next.PlatformUserID != tok.PlatformUserID {
		t.Fatalf("refresh after 25 h: %v", err)
	}
	wantCode(t, p.Revoke(context.Background(), tok), oauth.CodeUnsupported)
}

func TestNegativeFlows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("wrong verifier", func(t *testing.T) {
		e := newEnv(t, sandbox.Config{AutoApprove: true})
		p := e.provider("twitter")
		start, _ := p.Begin()
		q, _ := e.authorize(start, "")
		_, err := p.Complete(ctx, secret.New(q.Get("code")), secret.New("wrong-verifier-wrong-verifier-wrong-verifier"))
		wantCode(t, err, oauth.CodeInvalidGrant)
		if e.sb.Stats()["twitter"].Rejected["wrong_code_verifier"] != 1 {
			t.Error("sandbox did not see a wrong verifier")
		}
	})
	t.Run("reused code", func(t *testing.T) {
		e := newEnv(t, sandbox.Config{AutoApprove: true})
		for _, platform := range oauth.Platforms {
			p := e.provider(platform)
			start, _ := p.Begin()
			q, _ := e.authorize(start, "")
			if _, err := p.Complete(ctx, secret.New(q.Get("code")), start.Verifier); err != nil {
				t.Fatal(err)
			}
			_, err := p.Complete(ctx, secret.New(q.Get("code")), start.Verifier)
			if codeOf(err) != oauth.CodeInvalidGrant {
				t.Errorf("%s reused code: %v", platform, err)
			}
		}
	})
	t.Run("expired code", func(t *testing.T) {
		e := newEnv(t, sandbox.Config{AutoApprove: true})
		for _, platform := range oauth.Platforms {
			p := e.provider(platform)
			start, _ := p.Begin()
			q, _ := e.authorize(start, "")
			e.sb.Clock().Advance(31 * time.Second)
			_, err := p.Complete(ctx, secret.New(q.Get("code")), start.Verifier)
			if codeOf(err) != oauth.CodeInvalidGrant {
				t.Errorf("%s expired code: %v", platform, err)
			}
		}
	})
	t.Run("redirect uri off by one character", func(t *testing.T) {
		e := newEnv(t, sandbox.Config{AutoApprove: true})
		for _, platform := range oauth.Platforms {
			off := e.provider(platform, func(c *oauth.Config) { c.RedirectURL += "x" })
			start, _ := off.Begin()
			resp, err := noRedirects.Get(start.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Errorf("%s authorize with an unregistered redirect: %d %s", platform, resp.StatusCode, resp.Header.Get("Location"))
			}
			// A code issued for the right URI, redeemed with another.
			p := e.provider(platform)
			start, _ = p.Begin()
			q, _ := e.authorize(start, "")
			_, err = off.Complete(ctx, secret.New(q.Get("code")), start.Verifier)
			if codeOf(err) != oauth.CodeInvalidGrant {
				t.Errorf("%s token with another redirect: %v", platform, err)
			}
		}
	})
	t.Run("twitter without basic auth", func(t *testing.T) {
		e := newEnv(t, sandbox.Config{AutoApprove: true})
		_, token, _, _ := oauth.SandboxURLs("twitter", e.base)
		resp, err := noRedirects.PostForm(token, url.Values{"grant_type": {"authorization_code"}, "code": {"x"},
			"client_id": {"twitter-client-id"}, "client_secret": {"twitter-client-secret"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || e.sb.Stats()["twitter"].Rejected["missing_basic_auth"] != 1 {
			t.Errorf("twitter token without Basic: %d", resp.StatusCode)
		}
	})
	t.Run("linkedin with a verifier", func(t *testing.T) {
		e := newEnv(t, sandbox.Config{AutoApprove: true})
		p := e.provider("linkedin")
		start, _ := p.Begin()
		q, _ := e.authorize(start, "")
		_, token, _, _ := oauth.SandboxURLs("linkedin", e.base)
		resp, err := noRedirects.PostForm(token, url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
			"redirect_uri": {p.RedirectURL()}, "client_id": {"linkedin-client-id"}, "client_secret": {"linkedin-client-secret"},
			"code_verifier": {"abc"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("linkedin with code_verifier: %d, want 401", resp.StatusCode)
		}
	})
	t.Run("denied consent", func(t *testing.T) {
		e := newEnv(t, sandbox.Config{})
		for _, platform := range oauth.Platforms {
			p := e.provider(platform)
			start, _ := p.Begin()
			resp, err := noRedirects.Get(start.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
				t.Fatalf("%s consent page: %d %s", platform, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			q, _ := e.authorize(start, "deny")
			cbErr := oauth.CallbackError(platform, q)
			if cbErr == nil || cbErr.Code != oauth.CodeAccessDenied || q.Get("code") != "" {
				t.Errorf("%s denial: %v (query %v)", platform, cbErr, q)
			}
			q, _ = e.authorize(start, "approve")
			if q.Get("code") == "" || oauth.CallbackError(platform, q) != nil {
				t.Errorf("%s approval via the form: %v", platform, q)
			}
		}
	})
}

func TestInjectedFaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		name  string
		fault sandbox.Fault
		want  oauth.Code
	}{
		{"error rate", sandbox.Fault{ErrorRate: 1}, oauth.CodeProviderUnavailable},
		{"latency beyond the timeout", sandbox.Fault{Latency: sandbox.Duration(2 * time.Second)}, oauth.CodeProviderUnavailable},
		{"forced invalid_grant", sandbox.Fault{InvalidGrant: true}, oauth.CodeInvalidGrant},
		// An error inside a 200 is an error in each platform's own terms:
		// RFC invalid_request, Graph code 1 ("API Unknown", temporary), and
		// Instagram's unclassifiable flat error.
		{"error inside 200", sandbox.Fault{ErrorIn200: true}, ""},
		{"html 502", sandbox.Fault{HTML502: true}, oauth.CodeProviderUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, platform := range oauth.Platforms {
				e := newEnv(t, sandbox.Config{AutoApprove: true})
				p := e.provider(platform, func(c *oauth.Config) { c.Timeout = 300 * time.Millisecond })
				start, _ := p.Begin()
				q, _ := e.authorize(start, "")
				e.sb.SetFault(platform+"."+sandbox.EndpointToken, tc.fault)
				_, err := p.Complete(ctx, secret.New(q.Get("code")), start.Verifier)
				want := tc.want
				if want == "" {
					want = map[string]oauth.Code{"twitter": oauth.CodeInvalidRequest, "linkedin": oauth.CodeInvalidRequest,
						"facebook": oauth.CodeProviderUnavailable, "instagram": oauth.CodeInvalidResponse}[platform]
				}
				var oe *oauth.Error
				if !errors.As(err, &oe) || oe.Code != want || oe.Op != "exchange" {
					t.Errorf("%s: %v, want %s on exchange", platform, err, want)
				}
				if oe != nil && oe.Retryable != (want == oauth.CodeProviderUnavailable) {
					t.Errorf("%s: retryable=%v", platform, oe.Retryable)
				}
			}
		})
	}
	// A fault on the profile endpoint fails the flow at that step.
	e := newEnv(t, sandbox.Config{AutoApprove: true})
	e.sb.SetFault("twitter.profile", sandbox.Fault{HTML502: true})
	p := e.provider("twitter")
	start, _ := p.Begin()
	q, _ := e.authorize(start, "")
	_, err := p.Complete(ctx, secret.New(q.Get("code")), start.Verifier)
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Op != "profile" || oe.Code != oauth.CodeProviderUnavailable {
		t.Errorf("profile fault: %v", err)
	}
}
