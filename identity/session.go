package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Limits on what a session cookie may be. A browser sends at most a few
// chunks (16 KB Cookie headers occur; @supabase/ssr chunks at 3,180
// characters), so anything far past that is refused before any decoding.
const (
	maxChunks       = 16
	maxSessionBytes = 64 << 10
	maxTokenBytes   = 16 << 10
)

// Format is how a session cookie's value is written.
type Format int

const (
	// FormatBase64 is @supabase/ssr's default: "base64-" and the
	// base64url of the session JSON.
	FormatBase64 Format = iota + 1
	// FormatJSON is the session JSON itself (@supabase/ssr with
	// cookieEncoding "raw"), percent-encoded in the header.
	FormatJSON
	// FormatArray is @supabase/auth-helpers' (0.8–0.10): a JSON array
	// whose first element is the access token and second the refresh
	// token.
	FormatArray
	// FormatJWT is a bare access token (the 2022 helpers'
	// "sb-access-token").
	FormatJWT
)

// Session is what a session cookie carried.
type Session struct {
	AccessToken  string
	RefreshToken string
	Format       Format
	// Chunks are the names of the request's cookies that held it, so a
	// rewrite can expire the ones it no longer needs.
	Chunks []string
	// Duplicated: the request carried one of those names twice (cookies
	// set for another Domain or Path beside credgate's): which one the
	// app reads is the app's framework's choice, so credgate does not
	// rewrite them.
	Duplicated bool
}

var (
	errNoCookie  = errors.New("no session cookie")
	errMalformed = errors.New("malformed session cookie")
)

// ReadSession assembles the cookie named name from r, whole or in chunks
// (name.0, name.1, … concatenated, as @supabase/ssr's combineChunks does),
// and decodes it in whichever format it is written.
func ReadSession(r *http.Request, name string) (Session, error) {
	return readSession(r.Cookies(), name)
}

// readSession is ReadSession on cookies already parsed.
func readSession(cookies []*http.Cookie, name string) (Session, error) {
	value, chunks, dup, err := assemble(cookies, name)
	if err != nil {
		return Session{}, err
	}
	s, err := decodeSession(value)
	if err != nil {
		return Session{}, err
	}
	s.Chunks, s.Duplicated = chunks, dup
	return s, nil
}

// assemble returns the cookie's whole value: the cookie itself when it is
// present and not empty, else its chunks in order until the first gap.
func assemble(cookies []*http.Cookie, name string) (string, []string, bool, error) {
	byName := make(map[string]string, len(cookies))
	var chunkNames []string
	duplicated := false
	for _, c := range cookies {
		if c.Name != name && !isChunkOf(c.Name, name) {
			continue
		}
		if _, dup := byName[c.Name]; dup {
			duplicated = true
			continue // the first one wins, as the cookie package reads it
		}
		byName[c.Name] = c.Value
		chunkNames = append(chunkNames, c.Name)
	}
	if v := byName[name]; v != "" {
		return v, chunkNames, duplicated, nil
	}
	var b strings.Builder
	for i := 0; ; i++ {
		v, ok := byName[name+"."+strconv.Itoa(i)]
		if !ok || v == "" {
			if i == 0 {
				return "", nil, false, errNoCookie
			}
			break
		}
		if i == maxChunks || b.Len()+len(v) > maxSessionBytes {
			return "", nil, false, errMalformed
		}
		b.WriteString(v)
	}
	return b.String(), chunkNames, duplicated, nil
}

// isChunkOf matches name.N with N a decimal without leading zeros, as
// @supabase/ssr's isChunkLike does.
func isChunkOf(cookie, name string) bool {
	n, ok := strings.CutPrefix(cookie, name+".")
	if !ok || n == "" || len(n) > 3 || (n[0] == '0' && len(n) > 1) {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func decodeSession(v string) (Session, error) {
	if len(v) > maxSessionBytes {
		return Session{}, errMalformed
	}
	if b64, ok := strings.CutPrefix(v, "base64-"); ok {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(b64, "="))
		if err != nil {
			return Session{}, errMalformed
		}
		s, err := decodeJSONSession(raw)
		s.Format = FormatBase64
		return s, err
	}
	// Frameworks percent-encode cookie values (encodeURIComponent); a
	// JSON value always arrives encoded, a JWT or base64 never needs to.
	if strings.HasPrefix(v, "%") {
		dec, err := url.PathUnescape(v)
		if err != nil {
			return Session{}, errMalformed
		}
		v = dec
	}
	switch {
	case strings.HasPrefix(v, "{"):
		s, err := decodeJSONSession([]byte(v))
		s.Format = FormatJSON
		return s, err
	case strings.HasPrefix(v, "["):
		var arr []json.RawMessage
		if err := json.Unmarshal([]byte(v), &arr); err != nil || len(arr) == 0 {
			return Session{}, errMalformed
		}
		var s Session
		if json.Unmarshal(arr[0], &s.AccessToken) != nil || s.AccessToken == "" {
			return Session{}, errMalformed
		}
		if len(arr) > 1 {
			_ = json.Unmarshal(arr[1], &s.RefreshToken) // null or absent: no refresh
		}
		s.Format = FormatArray
		return s, checkToken(s)
	case strings.Count(v, ".") == 2:
		s := Session{AccessToken: v, Format: FormatJWT}
		return s, checkToken(s)
	}
	return Session{}, errMalformed
}

func decodeJSONSession(raw []byte) (Session, error) {
	var body struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.AccessToken == "" {
		return Session{}, errMalformed
	}
	s := Session{AccessToken: body.AccessToken, RefreshToken: body.RefreshToken}
	return s, checkToken(s)
}

func checkToken(s Session) error {
	if len(s.AccessToken) > maxTokenBytes || len(s.RefreshToken) > maxTokenBytes {
		return errMalformed
	}
	return nil
}
