package answer

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The token API writes its answer by hand (Token.appendJSON); it
// must be byte for byte what encoding/json writes, whatever the strings
// hold (quotes, controls, HTML, invalid UTF-8, U+2028) and with or
// without an expiry and scopes.
func TestTheTokenAnswerIsWhatEncodingJSONWrites(t *testing.T) {
	at := time.Date(2026, 12, 6, 7, 10, 54, 77307000, time.UTC)
	zoned := time.Date(2027, 1, 2, 3, 4, 5, 0, time.FixedZone("", -7*3600))
	strs := []string{"", "plain-token_0123.~", `quo"te`, `back\slash`, "tab\tnl\n", "\x00\x1f\x7f", "<a>&b", "é ü 日本",
		"\xff\xfe broken", "line\u2028sep\u2029", strings.Repeat("x", 300)}
	var views []Token
	for i, s := range strs {
		v := Token{AccessToken: s, TokenType: strs[(i+1)%len(strs)], PlatformUserID: strs[(i+2)%len(strs)]}
		switch i % 4 {
		case 0:
			v.ExpiresAt, v.Scopes = &at, []string{"tweet.read", s}
		case 1:
			v.ExpiresAt, v.Scopes = &zoned, []string{}
		case 2:
			v.Scopes = nil
		case 3:
			v.ExpiresAt, v.Scopes = &at, []string{s, s, "offline.access"}
		}
		views = append(views, v)
	}
	for i, v := range views {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(v); err != nil {
			t.Fatal(err)
		}
		if got, err := v.AppendJSON(nil); err != nil || !bytes.Equal(got, want.Bytes()) {
			t.Errorf("view %d (%v):\n got %s\nwant %s", i, err, got, want.Bytes())
		}
	}

	// Where encoding/json fails (writing nothing, which the handler once
	// sent as an empty 200): a year past 9999 in the time's own zone is
	// written in UTC, and one past 9999 in UTC too is an error, never
	// "expires_at": null, which says the token does not expire.
	east := time.Date(9999, 12, 31, 23, 30, 0, 0, time.UTC).In(time.FixedZone("", 2*3600))
	v := Token{AccessToken: "a", TokenType: "bearer", ExpiresAt: &east, Scopes: []string{}}
	utc := v
	utc.ExpiresAt = &[]time.Time{east.UTC()}[0]
	var want bytes.Buffer
	if err := json.NewEncoder(&want).Encode(utc); err != nil {
		t.Fatal(err)
	}
	if got, err := v.AppendJSON(nil); err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Errorf("an expiry in year 10000 in its zone, 9999 in UTC:\n got %s (%v)\nwant %s", got, err, want.Bytes())
	}
	far := time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC)
	v.ExpiresAt = &far
	if got, err := v.AppendJSON(nil); err == nil {
		t.Errorf("an expiry in year 10001: %s, want an error", got)
	}
}
