package identity

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// chunkSize is @supabase/ssr's MAX_CHUNK_SIZE: a cookie value longer than
// this, once percent-encoded, is split into name.0, name.1, …
const chunkSize = 3180

// cookieMaxAge is @supabase/ssr's DEFAULT_COOKIE_OPTIONS.maxAge (400
// days, the most browsers keep).
const cookieMaxAge = 400 * 24 * 60 * 60

// CookieOptions are the attributes the app's @supabase/ssr client gives
// its session cookie beyond the defaults (its cookieOptions): a Domain
// shared by subdomains, Secure. credgate must write the same, or the
// browser keeps two copies of the session.
type CookieOptions struct {
	Domain string
	Secure bool
}

// maxCookieValue is the largest value credgate writes back: no more
// chunks than it would read itself.
const maxCookieValue = maxChunks * chunkSize

// errSessionTooLarge: a refreshed session credgate would not read back.
var errSessionTooLarge = errors.New("the refreshed session is too large to store in cookies")

// SessionCookies returns the Set-Cookie lines that store session (the
// session JSON Supabase Auth answered) under name the way @supabase/ssr's
// server client does: the same encoding as the request's cookie (base64
// or raw JSON), chunked at the same boundaries, with the same attributes
// (Path /, SameSite Lax, readable by the page's script, 400 days, and the
// app's Domain and Secure), and the request's chunks that the new value
// no longer uses expired (host-only too when a Domain is set, as
// @supabase/ssr does), so the browser never combines old and new chunks.
func SessionCookies(name string, session []byte, format Format, previous []string, opts CookieOptions) ([]*http.Cookie, error) {
	var value string
	if format == FormatJSON {
		value = encodeURIComponent(string(session))
	} else {
		value = "base64-" + base64.RawURLEncoding.EncodeToString(session)
	}
	if len(value) > maxCookieValue {
		return nil, errSessionTooLarge
	}
	chunks := split(value)
	var out []*http.Cookie
	var names []string
	for i, v := range chunks {
		n := name
		if len(chunks) > 1 {
			n = name + "." + strconv.Itoa(i)
		}
		names = append(names, n)
		out = append(out, &http.Cookie{Name: n, Value: v, Path: "/", Domain: opts.Domain, Secure: opts.Secure,
			MaxAge: cookieMaxAge, SameSite: http.SameSiteLaxMode})
	}
	for _, old := range previous {
		if slices.Contains(names, old) {
			continue
		}
		out = append(out, &http.Cookie{Name: old, Path: "/", Domain: opts.Domain, Secure: opts.Secure, MaxAge: -1, SameSite: http.SameSiteLaxMode})
		if opts.Domain != "" {
			out = append(out, &http.Cookie{Name: old, Path: "/", Secure: opts.Secure, MaxAge: -1, SameSite: http.SameSiteLaxMode})
		}
	}
	return out, nil
}

// split cuts an encoded value into chunks of at most chunkSize
// characters, at the boundaries @supabase/ssr's createChunks uses: never
// inside a %XX escape, nor inside the escapes of one UTF-8 character
// (each chunk must decode on its own: the library decodes chunk by
// chunk).
func split(v string) []string {
	var out []string
	for len(v) > chunkSize {
		cut := chunkSize
		if i := strings.LastIndexByte(v[:cut], '%'); i > cut-3 {
			cut = i
		}
		// Back off while the next chunk would start with a UTF-8
		// continuation byte (%80–%BF).
		for cut >= 3 && v[cut] == '%' && isContinuation(v[cut+1:cut+3]) {
			cut -= 3
		}
		out = append(out, v[:cut])
		v = v[cut:]
	}
	return append(out, v)
}

func isContinuation(hex2 string) bool {
	b, err := strconv.ParseUint(hex2, 16, 8)
	return err == nil && b&0xC0 == 0x80
}

// encodeURIComponent is JavaScript's: everything but A–Z a–z 0–9 and
// -_.!~*'() is percent-encoded as UTF-8, which is how frameworks write a
// cookie value and how the cookie package reads it back.
func encodeURIComponent(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) * 3 / 2)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("-_.!~*'()", c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// ReplaceRequestCookies rewrites r's Cookie header so that the handlers
// after credgate (the app) see the refreshed session instead of the stale
// one: every cookie in set replaces its namesake, expired ones are
// dropped. Other cookies pass byte for byte, even ones Go would not parse.
func ReplaceRequestCookies(r *http.Request, set []*http.Cookie) {
	drop := make(map[string]bool, len(set))
	for _, c := range set {
		drop[c.Name] = true
	}
	var parts []string
	for _, line := range r.Header.Values("Cookie") {
		for part := range strings.SplitSeq(line, ";") {
			part = strings.TrimSpace(part)
			name, _, _ := strings.Cut(part, "=")
			if part != "" && !drop[name] {
				parts = append(parts, part)
			}
		}
	}
	for _, c := range set {
		if c.MaxAge >= 0 {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	r.Header.Set("Cookie", strings.Join(parts, "; "))
}
