package oauth

import (
	"errors"
	"net"
	"strings"
	"testing"
	"unicode/utf8"
)

// asError relabels a copy: the error the caller passed keeps its Op.
func TestAsErrorDoesNotChangeItsArgument(t *testing.T) {
	p := &Provider{profile: Profile{Name: "twitter"}}
	orig := newError("twitter", "exchange", CodeInvalidGrant, 400, "bad code")
	got := p.asError("refresh", orig)
	if orig.Op != "exchange" {
		t.Fatalf("asError changed its argument: Op %q", orig.Op)
	}
	if got.Op != "refresh" || got.Code != CodeInvalidGrant {
		t.Fatalf("asError: %+v", got)
	}
}

// A provider's text that mentions a refused connection is not a refused
// connection: only the errno says so.
func TestTransportProblemMatchesTheErrnoNotTheText(t *testing.T) {
	if got := transportProblem(errors.New("upstream said: connection refused")); got == "connection refused" {
		t.Fatalf("matched on the text: %q", got)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = net.Dial("tcp", addr)
	if got := transportProblem(err); got != "connection refused" {
		t.Fatalf("a refused dial: %q (%v)", got, err)
	}
}

// A provider's error description is safe to log: secrets and token-like
// runs are redacted, control characters folded, the length capped on a
// character boundary; ordinary descriptions are kept as they are.
func TestSanitizeRedactsWhatLooksLikeASecret(t *testing.T) {
	kept := []string{
		"The redirect_uri does not match the registered one",
		"invalid_request: missing required parameter",
		"Authorization code expired",
	}
	for _, s := range kept {
		if got := sanitize(s); got != s {
			t.Errorf("sanitize(%q) = %q, want it unchanged", s, got)
		}
	}
	leaks := map[string]string{
		"hex run":        "bad grant deadbeefdeadbeefcafebabe for client",
		"letters only":   "echo: QUJDREVGR0hJSktMTU5PUFFSU1RVVldY rejected",
		"named secret":   "client_secret=SuperSecretValue is wrong",
		"named token":    `access_token: "abcDEFghiJKL" expired`,
		"code":           "code=OneTimeCodeXYZ already used",
		"bearer":         "header Bearer abc.def.ghi rejected",
		"jwt":            "assertion eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl invalid",
		"mixed short":    "token ab12cd34ef56 unknown",
		"with a newline": "ok\n{\"level\":\"error\",\"msg\":\"forged\"}",
	}
	secrets := []string{"deadbeefdeadbeefcafebabe", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", "SuperSecretValue", "abcDEFghiJKL",
		"OneTimeCodeXYZ", "abc.def.ghi", "eyJhbGciOiJIUzI1NiJ9", "ab12cd34ef56", "\n"}
	for name, s := range leaks {
		got := sanitize(s)
		for _, secret := range secrets {
			if strings.Contains(got, secret) {
				t.Errorf("%s: sanitize(%q) = %q still holds %q", name, s, got, secret)
			}
		}
	}
	long := strings.Repeat("é", 150) // 300 bytes
	if got := sanitize(long); !utf8.ValidString(got) || len(got) > 200+len("…") {
		t.Errorf("a long description was cut inside a character or not at all: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}
