package secret

import (
	"strings"
	"testing"
)

// A published or short secret is refused only once a public origin is
// served, and the refusal names the option, never the value.
func TestExposureRefusesWeakSecretsOnAPublicOrigin(t *testing.T) {
	t.Parallel()
	var e Exposure
	e.NoteOrigin("http://localhost:8080")
	e.NoteOrigin("http://127.0.0.1:8080")
	e.NoteSecret("credgate handler", "admin_token", "development-admin-token", MinAdminToken)
	e.NoteSecret("credgate_tokens", "service_token", "a-long-enough-service-token", 0)
	if err := e.Check(); err != nil {
		t.Fatalf("loopback only: %v", err)
	}
	e.NoteSecret("credgate handler", "admin_token", "x7q9", MinAdminToken)
	e.NoteOrigin("https://app.example.com")
	err := e.Check()
	if err == nil {
		t.Fatal("a public origin with weak secrets was not refused")
	}
	for _, want := range []string{"https://app.example.com", "admin_token is the published development value", "is shorter than 16 characters"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	for _, secret := range []string{"development-admin-token", "x7q9", "a-long-enough-service-token"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%q repeats a secret", err)
		}
	}
	if strings.Contains(err.Error(), "service_token") {
		t.Errorf("%q names a strong secret", err)
	}
}

func TestLiteralSecrets(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]bool{"": false, "{env.X}": false, "{file./run/s}": false, "hunter2-literal": true,
		"development-admin-token": false} {
		if got := Literal(raw); got != want {
			t.Errorf("Literal(%q) = %v, want %v", raw, got, want)
		}
	}
}
