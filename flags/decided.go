package flags

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// The decided mark. A browser the decision route sent to the app's
// connect route brings its decision along, so that the connect route
// hands the request to the app without deciding, and counting, again:
// each connect is one decision, whichever way the app asks. The mark is
// the query parameter credgate_decided=<expiry>.<mac>, the MAC an
// HMAC-SHA256 under the state MAC subkey of
// "credgate/rollout-decided/v1\n<user>\n<platform>\n<expiry>" (a state's
// MAC covers "cg1.…", so neither can pass for the other). Bound to the
// user and platform and good for DecidedFor, it cannot be handed to
// another user or kept to stay on the legacy flow after the rollout
// moved; a mark that does not check out is ignored, and the connect route
// decides as usual. It is removed before the app sees the request. Only
// the legacy arm carries one: the new arm goes to credgate's start route,
// which does not decide.
const (
	DecidedParam = "credgate_decided"
	DecidedFor   = 2 * time.Minute
)

// DecidedMark is the mark of a legacy decision for user on platform at
// now, under key.
func DecidedMark(key []byte, user, platform string, now time.Time) string {
	exp := strconv.FormatInt(now.Add(DecidedFor).Unix(), 10)
	return exp + "." + decidedMAC(key, user, platform, exp)
}

// ValidDecidedMark reports whether mark is a decided mark on platform,
// unexpired at now, under one of keys (the current state MAC key and
// those of the previous master keys), for the user that user reads; it
// returns that user. The user is read only for a mark that has not
// expired: reading it may ask the identity provider.
func ValidDecidedMark(keys [][]byte, mark, platform string, now time.Time, user func() string) (string, bool) {
	exp, mac, ok := strings.Cut(mark, ".")
	at, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || now.Unix() > at {
		return "", false
	}
	u := user()
	for _, key := range keys {
		if hmac.Equal([]byte(decidedMAC(key, u, platform, exp)), []byte(mac)) {
			return u, true
		}
	}
	return "", false
}

func decidedMAC(key []byte, user, platform, exp string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("credgate/rollout-decided/v1\n" + user + "\n" + platform + "\n" + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
