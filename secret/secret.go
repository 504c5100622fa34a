// Package secret holds values that must never be printed: OAuth tokens,
// authorization codes, PKCE verifiers and keys.
//
// A Value redacts itself in every formatting path Go offers (fmt verbs,
// %#v, JSON, slog), so a stray log line or error wrap cannot leak it. The
// only way to the bytes is Reveal, which is easy to search for in review.
// It lives in its own package because oauth produces these values and vault
// stores them, and neither should import the other.
package secret

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Redacted is what a Value prints instead of itself.
const Redacted = "[redacted]"

// Value is a string that does not print. The zero value is empty.
type Value struct {
	v string
}

// New wraps s.
func New(s string) Value { return Value{v: s} }

// Reveal returns the secret. Call it only where the bytes leave for their
// one legitimate destination (a provider request, the cipher).
func (s Value) Reveal() string { return s.v }

// IsZero reports whether the value is empty.
func (s Value) IsZero() bool { return s.v == "" }

// Equal compares in constant time.
func (s Value) Equal(o Value) bool { return subtle.ConstantTimeCompare([]byte(s.v), []byte(o.v)) == 1 }

// String redacts.
func (s Value) String() string {
	if s.v == "" {
		return ""
	}
	return Redacted
}

// GoString redacts (%#v).
func (s Value) GoString() string { return `secret.Value{` + s.String() + `}` }

// Format redacts for every verb, including %x and %q.
func (s Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, s.GoString())
		return
	}
	fmt.Fprint(f, s.String())
}

// MarshalJSON redacts. Code that must serialise the secret (the encrypted
// payload) reveals it explicitly into its own struct.
func (s Value) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalText redacts, for encoders that prefer text (YAML, zap).
func (s Value) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue redacts for log/slog.
func (s Value) LogValue() slog.Value { return slog.StringValue(s.String()) }
