package egress_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/credgate/credgate/egress"
)

// The API path goes on as the app encoded it: a LinkedIn URN keeps its
// %3A, a space its %20.
func TestTheAPIPathKeepsItsEncoding(t *testing.T) {
	t.Parallel()
	base, _ := url.Parse("https://api.linkedin.com")
	for raw, want := range map[string]string{
		"/linkedin/rest/posts/urn%3Ali%3Ashare%3A123": "https://api.linkedin.com/rest/posts/urn%3Ali%3Ashare%3A123",
		"/linkedin/v2/a%20b?x=1":                      "https://api.linkedin.com/v2/a%20b?x=1",
		"/linkedin/v2/me/":                            "https://api.linkedin.com/v2/me/",
	} {
		r := httptest.NewRequest("GET", raw, nil)
		platform, apiPath, rawPath, err := egress.Target(r)
		if err != nil || platform != "linkedin" {
			t.Fatalf("%s: %s %v", raw, platform, err)
		}
		if got := egress.URL(base, apiPath, rawPath, r.URL.RawQuery).String(); got != want {
			t.Errorf("%s went to %s, want %s", raw, got, want)
		}
	}
}

// credgate's own headers and the caller's credentials never reach the
// platform.
func TestTheCallersHeadersNeverReachThePlatform(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	for _, name := range []string{"Authorization", "X-Credgate-User", "X-Credgate-Retry", "Cookie", "Proxy-Authorization",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Content-Type", "X-Restli-Protocol-Version"} {
		h.Set(name, "x")
	}
	egress.DropCallerHeaders(h)
	if len(h) != 2 || h.Get("Content-Type") == "" || h.Get("X-Restli-Protocol-Version") == "" {
		t.Fatalf("forwarded headers: %v, want Content-Type and X-Restli-Protocol-Version only", h)
	}
}

// Only a path names the target: no absolute URI, dot segment, encoded
// slash or character that could change the host gets through.
func TestATargetCannotNameAnotherHost(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"/twitter/../evil.com/x", "/twitter/a%2fb", "/twitter/a%5Cb", "/twitter/@evil.com", "/twitter//evil.com/x",
		"/twitter/./x", "/twitter", "//twitter/x"} {
		r := httptest.NewRequest("GET", "http://gw.internal"+raw, nil)
		r.URL.Host, r.URL.Scheme = "", ""
		if platform, apiPath, _, err := egress.Target(r); err == nil {
			t.Errorf("%s was taken as %s %s", raw, platform, apiPath)
		}
	}
	abs := httptest.NewRequest("GET", "http://evil.com/twitter/x", nil)
	if _, _, _, err := egress.Target(abs); err == nil {
		t.Error("an absolute request URI was taken")
	}
}

// Idempotent calls may be sent again after a renewal; others only when
// the app says "safe", and only with that one value.
func TestACallIsResentOnlyWhenThatDoesNoHarm(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		method, header string
		want           bool
		bad            bool
	}{
		{"GET", "", true, false}, {"PUT", "", true, false}, {"DELETE", "", true, false},
		{"POST", "", false, false}, {"PATCH", "", false, false}, {"POST", "safe", true, false}, {"POST", " Safe ", true, false},
		{"POST", "yes", false, true},
	} {
		r := httptest.NewRequest(c.method, "/twitter/2/tweets", nil)
		if c.header != "" {
			r.Header.Set(egress.RetryHeader, c.header)
		}
		got, err := egress.MayResend(r)
		if got != c.want || (err != nil) != c.bad {
			t.Errorf("%s with %q: %v %v", c.method, c.header, got, err)
		}
	}
}
