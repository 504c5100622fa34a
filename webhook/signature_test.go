package webhook_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/webhook"
)

var signingKey = []byte("a-webhook-secret-of-thirty-two-bytes")

func signed(body string, at time.Time, secrets ...[]byte) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(body))
	webhook.SignRequest(req, "evt-1", []byte(body), at, secrets...)
	return req
}

func TestVerifyAcceptsOnlyAFreshSignatureOfTheSameBody(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	body := `{"id":"evt-1","type":"account.revoked"}`
	other := []byte("another-secret-of-at-least-24-bytes")
	for _, tc := range []struct {
		name   string
		header http.Header
		body   string
		want   error
	}{
		{"signed now", signed(body, now, signingKey).Header, body, nil},
		{"during a rotation: the old secret's signature first", signed(body, now, other, signingKey).Header, body, nil},
		{"four minutes ago", signed(body, now.Add(-4*time.Minute), signingKey).Header, body, nil},
		{"a replay six minutes later", signed(body, now.Add(-6*time.Minute), signingKey).Header, body, webhook.ErrStale},
		{"a clock far ahead", signed(body, now.Add(6*time.Minute), signingKey).Header, body, webhook.ErrStale},
		{"another body", signed(body, now, signingKey).Header, body + " ", webhook.ErrMismatch},
		{"another secret", signed(body, now, other).Header, body, webhook.ErrMismatch},
		{"unsigned", http.Header{}, body, webhook.ErrNoSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.Verify(tc.header, []byte(tc.body), signingKey, now, 0)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
	h := signed(body, now, signingKey).Header
	if h.Get(webhook.HeaderID) != "evt-1" || !strings.HasPrefix(h.Get(webhook.HeaderSignature), "v1=") {
		t.Errorf("headers: %v", h)
	}
	// The scheme as a receiver in another language computes it:
	// printf '1.{}' | openssl dgst -sha256 -hmac k
	if got := webhook.Sign([]byte("{}"), time.Unix(1, 0), []byte("k")); got != "v1=3dd49b2593d0f9a349e9e71c4bde3e2b862c2be4003fe9b4ba81332029310158" {
		t.Errorf("Sign: %q", got)
	}
}
