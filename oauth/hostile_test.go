package oauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
)

// echo is a token-shaped marker every hostile body carries: no error
// message may repeat it.
const echo = "SECRETecho1234567890abcdef"

// TestHostileTokenResponses feeds the token exchange answers no provider
// should give. Each must end in the right stable code (or, where the
// answer is usable but odd, in a sanitised result), never a panic, and
// never echo the body.
func TestHostileTokenResponses(t *testing.T) {
	t.Parallel()
	big := `{"access_token":"` + echo + `","pad":"` + strings.Repeat("x", 2<<20) + `"}`
	cases := []struct {
		name        string
		status      int
		contentType string
		body        string
		slow        bool
		want        oauth.Code    // "" = success expected
		expiry      time.Duration // on success: expected lifetime (±1 min)
	}{
		{"html 200", 200, "text/html", "<html><body>Login " + echo + "</body></html>", false, oauth.CodeProviderUnavailable, 0},
		{"html 500", 500, "text/html; charset=utf-8", "<!doctype html><h1>oops " + echo + "</h1>", false, oauth.CodeProviderUnavailable, 0},
		{"html with json content type", 200, "application/json", "<html>" + echo, false, oauth.CodeProviderUnavailable, 0},
		{"empty 200", 200, "application/json", "", false, oauth.CodeProviderUnavailable, 0},
		{"whitespace 200", 200, "application/json", "  \n ", false, oauth.CodeProviderUnavailable, 0},
		{"2 MiB of json", 200, "application/json", big, false, oauth.CodeProviderUnavailable, 0},
		{"expires_in missing", 200, "application/json", `{"access_token":"` + echo + `","token_type":"bearer"}`, false, "", 2 * time.Hour},
		{"expires_in negative", 200, "application/json", `{"access_token":"` + echo + `","expires_in":-5}`, false, oauth.CodeInvalidResponse, 0},
		{"expires_in numeric string", 200, "application/json", `{"access_token":"` + echo + `","expires_in":"3600"}`, false, "", time.Hour},
		{"expires_in word", 200, "application/json", `{"access_token":"` + echo + `","expires_in":"soon"}`, false, oauth.CodeInvalidResponse, 0},
		{"expires_in in nanoseconds", 200, "application/json", `{"access_token":"` + echo + `","expires_in":7200000000000}`, false, "", 2 * time.Hour},
		{"access_token missing", 200, "application/json", `{"token_type":"bearer","note":"` + echo + `"}`, false, oauth.CodeInvalidResponse, 0},
		{"json as text/plain", 200, "text/plain", `{"access_token":"` + echo + `"}`, false, oauth.CodeInvalidResponse, 0},
		{"json as xml", 200, "application/xml", `not json ` + echo, false, oauth.CodeInvalidResponse, 0},
		{"truncated json", 200, "application/json", `{"access_token":"` + echo, false, oauth.CodeInvalidResponse, 0},
		{"slow loris", 200, "application/json", `{"access_token":"` + echo + `"}`, true, oauth.CodeProviderUnavailable, 0},
		{"error inside 200", 200, "application/json", `{"error":"invalid_grant","error_description":"bad ` + echo + `"}`, false, oauth.CodeInvalidGrant, 0},
		{"graph error object", 400, "application/json", `{"error":{"message":"Session expired ` + echo + `","type":"OAuthException","code":190}}`, false, oauth.CodeInvalidGrant, 0},
		{"instagram flat error", 400, "application/json", `{"error_type":"OAuthException","code":400,"error_message":"Matching code was not found or was already used ` + echo + `"}`, false, oauth.CodeInvalidGrant, 0},
		{"rate limited, no body", 429, "", "", false, oauth.CodeRateLimited, 0},
		{"temporarily unavailable", 503, "application/json", `{"error":"temporarily_unavailable"}`, false, oauth.CodeProviderUnavailable, 0},
		{"invalid client", 401, "application/json", `{"error":"invalid_client","error_description":"` + echo + `"}`, false, oauth.CodeInvalidClient, 0},
		{"error is an array", 400, "application/json", `{"error":["` + echo + `"]}`, false, oauth.CodeInvalidRequest, 0},
		{"null body", 200, "application/json", `null`, false, oauth.CodeInvalidResponse, 0},
		{"form-encoded error in 200", 200, "application/x-www-form-urlencoded", "error=invalid_grant&error_description=bad+" + echo, false, oauth.CodeInvalidGrant, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/2/oauth2/token" {
					// The profile lookup after a successful exchange.
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(`{"data":{"id":"42","username":"hostile"}}`))
					return
				}
				if tc.contentType != "" {
					w.Header().Set("Content-Type", tc.contentType)
				}
				w.WriteHeader(tc.status)
				if tc.slow {
					for i := range tc.body {
						if _, err := w.Write([]byte{tc.body[i]}); err != nil {
							return
						}
						w.(http.Flusher).Flush()
						select {
						case <-time.After(100 * time.Millisecond):
						case <-r.Context().Done():
							return
						}
					}
					return
				}
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			p, err := oauth.New("twitter", oauth.Config{ClientID: "id", ClientSecret: secret.New("s"), RedirectURL: "http://app/cb",
				AuthURL: srv.URL + "/i/oauth2/authorize", TokenURL: srv.URL + "/2/oauth2/token", APIBase: srv.URL,
				Timeout: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := p.Complete(context.Background(), secret.New("the-code"), secret.New("the-verifier"))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if d := time.Until(tok.Expiry); d < tc.expiry-time.Minute || d > tc.expiry+time.Minute {
					t.Errorf("expiry in %v, want about %v", d, tc.expiry)
				}
				return
			}
			wantCode(t, err, tc.want)
			if strings.Contains(err.Error(), echo) || strings.Contains(err.Error(), "the-code") || strings.Contains(err.Error(), "the-verifier") {
				t.Errorf("error echoes a secret: %v", err)
			}
		})
	}
}
