package identity

import (
	"context"
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
}

// Read reads r's identity. It may call Supabase Auth (a refresh) or the
// JWKS, bounded by ctx.
func (rd *Reader) Read(ctx context.Context, r *http.Request) Identity {
	found := Identity{Result: Missing}
	for _, name := range rd.Cookies {
		s, err := ReadSession(r, name)
		if err == errNoCookie {
			continue
		}
		var id Identity
		if err != nil {
			id = Identity{Result: Malformed}
		} else {
			id = rd.session(ctx, name, s)
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

func (rd *Reader) session(ctx context.Context, name string, s Session) Identity {
	user, res := rd.Verifier.Verify(ctx, s.AccessToken)
	switch {
	case res == OK:
		return Identity{UserID: user, Result: OK}
	case res != Expired:
		return Identity{Result: res}
	case rd.Refresher == nil || s.RefreshToken == "" || (s.Format != FormatBase64 && s.Format != FormatJSON):
		// The array and bare-token formats are the older helpers':
		// credgate does not rewrite them, the app refreshes them.
		return Identity{Result: Expired}
	}
	session, access, err := rd.Refresher.Refresh(ctx, s.RefreshToken)
	if err != nil {
		return Identity{Result: RefreshFailed, RefreshErr: err}
	}
	fresh, res := rd.Verifier.Verify(ctx, access)
	if res != OK || fresh != user {
		// Supabase Auth answered for someone else, or with a token
		// credgate cannot verify: trust neither.
		return Identity{Result: RefreshFailed}
	}
	return Identity{UserID: fresh, Result: Refreshed, SetCookies: SessionCookies(name, session, s.Format, s.Chunks)}
}
