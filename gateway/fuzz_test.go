package gateway

import (
	"net/url"
	"strings"
	"testing"
)

// Invariant: every return_to ValidReturnTo accepts is a path on the
// app's own origin: resolved against it, it stays on it, and it is under
// an allowed prefix.
func FuzzReturnTo(f *testing.F) {
	for _, s := range []string{"", "/settings", "/settings/x?y=1#z", "//evil.example", "/\\evil", "/settings/../admin",
		"https://evil.example/settings", "/%2F%2Fevil.example", "/settings%2F..%2F..", "/accounts?tab=social", "/\t/evil",
		"/settings@evil.example", "/settings/%2e%2e/admin", "/;@evil.example"} {
		f.Add(s)
	}
	allow := []string{"/settings", "/accounts"}
	origin, _ := url.Parse("https://app.example")
	f.Fuzz(func(t *testing.T, raw string) {
		got, ok := ValidReturnTo(allow, raw)
		if !ok {
			return
		}
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\r\n\t\x00") {
			t.Fatalf("accepted %q as %q: not a plain path", raw, got)
		}
		ref, err := url.Parse(got)
		if err != nil {
			t.Fatalf("accepted %q as %q, which does not parse: %v", raw, got, err)
		}
		abs := origin.ResolveReference(ref)
		if abs.Scheme != origin.Scheme || abs.Host != origin.Host || abs.User != nil {
			t.Fatalf("accepted %q as %q, which leaves the origin: %s", raw, got, abs)
		}
		if p := abs.Path; p != "/settings" && p != "/accounts" && !strings.HasPrefix(p, "/settings/") && !strings.HasPrefix(p, "/accounts/") {
			t.Fatalf("accepted %q as %q, outside the allowed prefixes: %s", raw, got, p)
		}
	})
}
