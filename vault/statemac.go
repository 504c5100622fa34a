package vault

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/credgate/credgate/secret"
)

// OAuth states credgate issues look like "cg1.<random>.<mac>": 32 random
// bytes and an HMAC-SHA256 of "cg1.<random>" under the state MAC subkey,
// both URL-safe base64. A callback that arrives on the app's legacy URL is
// then classified without a database lookup: only a state with a valid MAC
// is credgate's, so the legacy flow keeps working, fast, while PostgreSQL
// is down, and random or hostile states never reach the database.
const (
	statePrefix  = "cg1."
	stateRandLen = 43 // base64url of 32 bytes
	stateMACLen  = 43 // base64url of a SHA-256
	// StateLength is the exact length of an issued state.
	StateLength = len(statePrefix) + stateRandLen + 1 + stateMACLen
)

// IssueState returns a fresh self-authenticating state.
func (k *Keyring) IssueState() secret.Value {
	b := make([]byte, 32)
	rand.Read(b)
	body := statePrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret.New(body + "." + stateMAC(k.StateMACKey(), body))
}

// RecognizeState reports whether s is a state this keyring (any of its
// keys, so rotation does not orphan flows in progress) issued. It checks
// shape first and costs one HMAC per key; it never touches the database.
func (k *Keyring) RecognizeState(s string) bool {
	if len(s) != StateLength || !strings.HasPrefix(s, statePrefix) || s[len(statePrefix)+stateRandLen] != '.' {
		return false
	}
	for _, c := range s[len(statePrefix):] {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	body, mac := s[:len(statePrefix)+stateRandLen], s[len(statePrefix)+stateRandLen+1:]
	for _, key := range k.StateMACKeys() {
		if hmac.Equal([]byte(stateMAC(key, body)), []byte(mac)) {
			return true
		}
	}
	return false
}

func stateMAC(key []byte, body string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
