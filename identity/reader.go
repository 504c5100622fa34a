package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Reader finds the user in a request: the session cookies in order, then
// the Authorization header. The first usable identity wins; otherwise the
// first source that was present says why it was refused.
type Reader struct {
	// Cookies are read in order; each may hold any session format,
	// whole or chunked.
	Cookies []string
	// Header reads "Authorization: Bearer <token>" after the cookies.
	Header bool
	// Verifier checks the tokens.
	Verifier *Verifier
	// Refresher, when set, renews an expired session whose cookie
	// carries a refresh token (base64 and JSON formats) and the Reader
	// returns the cookies that store the renewed session.
	Refresher *Refresher
	// CookieOptions are the attributes of the cookies written back.
	CookieOptions CookieOptions
}

// Identity is what a request says about its user.
type Identity struct {
	// UserID is set only when Result is usable.
	UserID string
	Result Result
	// SetCookies store a refreshed session, for the response (and for
	// the request, so that the app behind credgate sees it too).
	SetCookies []*http.Cookie
	// RefreshErr is why a refresh failed (no secret in it).
	RefreshErr error
	// Anomaly is set when Supabase Auth answered a refresh with a
	// session for another user: worth a warning, never a user.
	Anomaly bool
}

// Mode says whether a read may refresh a stale session.
type Mode int

const (
	// MayRefresh: refresh an expired session and return the cookies
	// that store it (credgate's own routes, which answer themselves).
	MayRefresh Mode = iota
	// NoRefresh: name the user of a refreshable expired session (Stale)
	// without calling Supabase Auth or writing cookies, for a route that
	// may hand the request to the app untouched (the app's connect
	// route: its own middleware refreshes for the users it keeps).
	NoRefresh
)

// Read reads r's identity. It may call Supabase Auth (a refresh) or the
// JWKS, bounded by ctx.
func (rd *Reader) Read(ctx context.Context, r *http.Request, mode Mode) Identity {
	found := Identity{Result: Missing}
	cookies := r.Cookies()
	for _, name := range rd.Cookies {
		s, err := readSession(cookies, name)
		if errors.Is(err, errNoCookie) {
			continue
		}
		var id Identity
		if err != nil {
			id = Identity{Result: Malformed}
		} else {
			id = rd.session(ctx, name, s, mode)
		}
		if id.Result.Usable() {
			return id
		}
		if found.Result == Missing {
			found = id
		}
	}
	if rd.Header {
		if raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			user, res := rd.Verifier.Verify(ctx, strings.TrimSpace(raw))
			if res == OK {
				return Identity{UserID: user, Result: OK}
			}
			if found.Result == Missing {
				found = Identity{Result: res}
			}
		}
	}
	return found
}

func (rd *Reader) session(ctx context.Context, name string, s Session, mode Mode) Identity {
	user, res := rd.Verifier.Verify(ctx, s.AccessToken)
	switch {
	case res == OK:
		return Identity{UserID: user, Result: OK}
	case res != Expired:
		return Identity{Result: res}
	case rd.Refresher == nil || s.RefreshToken == "" || (s.Format != FormatBase64 && s.Format != FormatJSON) || s.Duplicated:
		// The array and bare-token formats are the older helpers':
		// credgate does not rewrite them, the app refreshes them; nor
		// does it rewrite a session the browser holds two copies of.
		return Identity{Result: Expired}
	case mode == NoRefresh:
		return Identity{UserID: user, Result: Stale}
	}
	session, access, err := rd.Refresher.Refresh(ctx, user, s.RefreshToken)
	if err != nil {
		return Identity{Result: RefreshFailed, RefreshErr: err}
	}
	fresh, res := rd.Verifier.Verify(ctx, access)
	switch {
	case res != OK:
		return Identity{Result: RefreshFailed, RefreshErr: fmt.Errorf("the refreshed access token does not verify: %s", res)}
	case fresh != user:
		// Supabase Auth answered for someone else: trust neither.
		return Identity{Result: RefreshFailed, Anomaly: true, RefreshErr: errors.New("supabase auth answered the refresh with another user's session")}
	}
	cookies, err := SessionCookies(name, session, s.Format, s.Chunks, rd.CookieOptions)
	if err != nil {
		return Identity{Result: RefreshFailed, RefreshErr: err}
	}
	return Identity{UserID: fresh, Result: Refreshed, SetCookies: cookies}
}
