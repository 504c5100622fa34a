// Package webhook is what credgate tells the app about its users'
// accounts, and how the app can tell it was credgate that said it.
//
// An account event (a user connected, an account needs the user again)
// is written to a PostgreSQL outbox in the same transaction as the change
// it reports (package vault), and delivered from there by any replica
// (Deliverer): at least once, in order per account, retried with backoff
// for a bounded time and then kept as failed. The events' vocabulary and
// the outbox are vault's (vault.AccountEventKind, vault.Outbox); this
// package holds the delivery body, the signature scheme and the
// deliverer, and knows nothing of Caddy.
//
// # The signature
//
// Every delivery is a POST with a JSON body and three headers:
//
//	Credgate-Webhook-Id:        the event's id (the same on every retry)
//	Credgate-Webhook-Timestamp: the delivery attempt's time, Unix seconds
//	Credgate-Webhook-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// The timestamp is signed with the body so a captured delivery cannot be
// replayed later: a receiver refuses a timestamp older than a few minutes
// (Verify's tolerance). The id lets a receiver drop a duplicate, since
// delivery is at least once. The "v1=" prefix leaves room for a second
// scheme, and during a secret rotation the header may carry several
// signatures separated by spaces (one per secret), any of which may match.
// This is the scheme Stripe and the Standard Webhooks specification use,
// so receivers have libraries and habits for it.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The delivery headers.
const (
	HeaderID        = "Credgate-Webhook-Id"
	HeaderTimestamp = "Credgate-Webhook-Timestamp"
	HeaderSignature = "Credgate-Webhook-Signature"
)

// signatureVersion prefixes each signature in HeaderSignature.
const signatureVersion = "v1="

// DefaultTolerance is how old a delivery's timestamp Verify accepts
// when the caller passes none, and how far in the future (clock skew).
const DefaultTolerance = 5 * time.Minute

// MinSecretLength is the shortest signing secret credgate accepts: an
// HMAC key shorter than this can be guessed offline from one delivery.
const MinSecretLength = 24

// Sign is the HeaderSignature value for body sent at timestamp, signed
// with each secret (the first is the current one).
func Sign(body []byte, timestamp time.Time, secrets ...[]byte) string {
	ts := strconv.FormatInt(timestamp.Unix(), 10)
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = signatureVersion + hex.EncodeToString(mac(s, ts, body))
	}
	return strings.Join(sigs, " ")
}

func mac(secret []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SignRequest sets the delivery headers of req, whose body is body.
func SignRequest(req *http.Request, eventID string, body []byte, now time.Time, secrets ...[]byte) {
	req.Header.Set(HeaderID, eventID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(body, now, secrets...))
}

// The reasons Verify refuses a delivery.
var (
	ErrNoSignature = errors.New("webhook: no signature or timestamp header")
	ErrStale       = errors.New("webhook: timestamp outside the tolerance (a replay, or a clock that is off)")
	ErrMismatch    = errors.New("webhook: no signature matches the body")
)

// Verify checks a delivery's headers against its raw body (read it
// before decoding: re-encoding the JSON changes the bytes). tolerance 0
// means DefaultTolerance. It returns nil only when a v1 signature made
// with secret matches and the timestamp is within tolerance of now.
func Verify(h http.Header, body []byte, secret []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts, sigs := h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if ts == "" || sigs == "" {
		return ErrNoSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook: timestamp %q is not Unix seconds", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := mac(secret, ts, body)
	for _, s := range strings.Fields(sigs) {
		hexSig, ok := strings.CutPrefix(s, signatureVersion)
		if !ok {
			continue
		}
		got, err := hex.DecodeString(hexSig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrMismatch
}
