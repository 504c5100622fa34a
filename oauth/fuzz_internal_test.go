package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

var knownCodes = map[Code]bool{
	CodeAccessDenied: true, CodeInvalidGrant: true, CodeInvalidRequest: true, CodeInvalidClient: true, CodeInvalidScope: true,
	CodeInsufficientScope: true, CodeRateLimited: true, CodeProviderUnavailable: true, CodeInvalidResponse: true,
	CodeNeedsReauth: true, CodeUnsupported: true, CodeServerError: true,
}

// plantedSecret stands for a token a provider echoed back.
const plantedSecret = "ya29.A0ARrdaM8kQeZ3v9XyPq7LmN2bT5wR1sD4fG6hJ8kL0"

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Invariant: whatever a provider answers (status, content type, body),
// the guard returns a clean 2xx body or an *Error with a known code,
// never panics, and an echoed token never reaches the error's message.
func FuzzProviderResponseGuard(f *testing.F) {
	for _, c := range []struct {
		status int
		ct     string
		body   string
	}{
		{200, "application/json", `{"access_token":"x","token_type":"bearer"}`},
		{400, "application/json", `{"error":"invalid_grant","error_description":"Invalid authorization code"}`},
		{200, "application/json", `{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190}}`},
		{502, "text/html", "<html>bad gateway</html>"},
		{200, "", ""},
		{429, "application/json", `{"title":"Too Many Requests","detail":"slow down","type":"about:blank","status":429}`},
		{401, "application/json", `{"serviceErrorCode":65600,"message":"Invalid access token","status":401}`},
		{200, "text/plain", "<"},
		// Keys that name an error without the lower-case word.
		{200, "application/json", `{"ERROR":"invalid_grant","Error_Description":"code used"}`},
		{200, "application/json", `{"\u0065rror":{"message":"dead token","code":190}}`},
	} {
		f.Add(c.status, c.ct, []byte(c.body))
	}
	parsers := []errorParser{twitterErrors, linkedinErrors, anyShape}
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		if status < 100 || status > 999 {
			status = 200 + (status%800+800)%800
		}
		// The shortcut past bodies that cannot name an error changes no
		// answer.
		c1, d1, ok1 := anyShape(status, body)
		c2, d2, ok2 := everyShape(status, body)
		if c1 != c2 || d1 != d2 || ok1 != ok2 {
			t.Fatalf("anyShape %q %q %v, everyShape %q %q %v", c1, d1, ok1, c2, d2, ok2)
		}
		desc, _ := json.Marshal("bad request: " + string(body) + " " + plantedSecret)
		planted := []byte(`{"error":"invalid_request","error_description":` + string(desc) + `}`)
		for _, parse := range parsers {
			for _, b := range [][]byte{body, planted} {
				g := &guard{platform: "fuzz", parse: parse, next: roundTripFunc(func(*http.Request) (*http.Response, error) {
					h := http.Header{}
					h.Set("Content-Type", contentType)
					return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(bytes.NewReader(b))}, nil
				})}
				req, _ := http.NewRequest(http.MethodPost, "https://provider.example/token", nil)
				resp, err := g.RoundTrip(req)
				if err == nil {
					if resp.StatusCode < 200 || resp.StatusCode > 299 {
						t.Fatalf("status %d passed the guard", resp.StatusCode)
					}
					continue
				}
				var e *Error
				if !errors.As(err, &e) || !knownCodes[e.Code] {
					t.Fatalf("guard error %T %v: not an *Error with a known code", err, err)
				}
				if strings.Contains(err.Error(), plantedSecret) || strings.Contains(err.Error(), plantedSecret[:20]) {
					t.Fatalf("an echoed token reached the error: %v", err)
				}
			}
		}
	})
}

// Invariant: any callback query gives nil or an *Error with a known code
// whose description holds no echoed token.
func FuzzCallbackError(f *testing.F) {
	for _, q := range []string{"error=access_denied", "error=user_cancelled_login&error_description=The+user+cancelled",
		"code=abc&state=x", "error=server_error&error_description=" + plantedSecret, "error=%00&error_description=%ff",
		"error=invalid_scope&error_description=" + strings.Repeat("a", 500)} {
		f.Add("twitter", q)
	}
	f.Fuzz(func(t *testing.T, platform, rawQuery string) {
		q, _ := url.ParseQuery(rawQuery)
		e := CallbackError(platform, q)
		if e == nil {
			if q.Get("error") != "" {
				t.Fatalf("error=%q gave no error", q.Get("error"))
			}
			return
		}
		if !knownCodes[e.Code] {
			t.Fatalf("unknown code %q", e.Code)
		}
		if strings.Contains(e.Description, plantedSecret) || len(e.Description) > 200+len("…") {
			t.Fatalf("description %q", e.Description)
		}
	})
}
