package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/google/uuid"

	"github.com/credgate/credgate/identity"
)

// Identity says how the handler learns who the user is (DESIGN §7): the
// session a Supabase app's pages carry (the supabase block), a JWT from a
// cookie or the Authorization header verified with an HS256 secret, a
// JWKS, or both, or a Caddy placeholder set by another auth module. The
// user id must be a UUID (social_accounts.user_id). The reading itself is
// package identity's.
type Identity struct {
	// Placeholder, such as "{http.auth.user.id}", takes the id from
	// another Caddy module (forward_auth, for example); when set, no JWT
	// is read.
	Placeholder string `json:"placeholder,omitempty"`
	// Supabase reads the session cookie @supabase/ssr writes and checks
	// tokens as Supabase Auth issues them. Default: none.
	Supabase *SupabaseIdentity `json:"supabase,omitempty"`
	// JWTSecret verifies HS256 tokens, normally
	// "{env.SUPABASE_JWT_SECRET}" (at least 32 bytes).
	JWTSecret string `json:"jwt_secret,omitempty"`
	// JWKSURL verifies RS256/ES256/EdDSA tokens by key id. With a
	// supabase block it defaults to the project's
	// "<auth_url>/.well-known/jwks.json"; jwt_secret and a JWKS work
	// together, chosen by each token's alg.
	JWKSURL string `json:"jwks_url,omitempty"`
	// Cookie holding a bare token (or any session format). Default
	// "sb-access-token" without a supabase block, none with one.
	Cookie string `json:"cookie,omitempty"`
	// NoHeader stops reading "Authorization: Bearer <token>". Default
	// false: the header is read, after the cookies.
	NoHeader bool `json:"no_header,omitempty"`
	// Claim holding the user id. Default "sub".
	Claim string `json:"claim,omitempty"`
	// Issuer and Audience, if set, must match the token's. With a
	// supabase block they default to "<project_url>/auth/v1" and
	// "authenticated".
	Issuer   string `json:"issuer,omitempty"`
	Audience string `json:"audience,omitempty"`

	reader *identity.Reader
}

// SupabaseIdentity is a Supabase project's session, as its pages carry it.
type SupabaseIdentity struct {
	// ProjectURL is the project's URL, "https://<ref>.supabase.co" or
	// a custom domain. Required. It names the cookie
	// ("sb-<ref>-auth-token", <ref> the host's first label) and the
	// tokens' issuer.
	ProjectURL string `json:"project_url,omitempty"`
	// PublishableKey (the "anon" key on older projects) lets credgate
	// refresh a session whose access token has expired, as the app's
	// own middleware would, and write it back as the same cookie.
	// Default: none, and an expired token goes to the legacy flow with
	// reason expired.
	PublishableKey string `json:"publishable_key,omitempty"`
	// AuthURL is where credgate reaches Supabase Auth. Default
	// "<project_url>/auth/v1"; set it for a self-hosted Supabase reached
	// on an internal address.
	AuthURL string `json:"auth_url,omitempty"`
	// Cookie is the session cookie's name (@supabase/ssr's storage
	// key). Default "sb-<ref>-auth-token".
	Cookie string `json:"cookie,omitempty"`
	// RefuseAnonymous treats anonymous sign-ins (is_anonymous) as no
	// user. Default false.
	RefuseAnonymous bool `json:"refuse_anonymous,omitempty"`
	// CookieDomain and CookieSecure are the Domain and Secure the app's
	// @supabase/ssr client sets on its session cookie (its
	// cookieOptions), so a refreshed session is written where the app's
	// is. Default: host-only, not Secure (@supabase/ssr's defaults).
	CookieDomain string `json:"cookie_domain,omitempty"`
	CookieSecure bool   `json:"cookie_secure,omitempty"`
}

// identityBudget bounds the identity work of a request: a JWKS fetch or a
// session refresh at Supabase Auth.
const identityBudget = 5 * time.Second

func (id *Identity) provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	secret := []byte(repl.ReplaceKnown(id.JWTSecret, ""))
	if id.JWTSecret != "" && len(secret) == 0 {
		return fmt.Errorf("credgate: identity jwt_secret %q is empty once its placeholders are replaced (is the variable set?)", id.JWTSecret)
	}
	for _, field := range []*string{&id.JWKSURL, &id.Issuer, &id.Audience, &id.Claim, &id.Cookie} {
		*field = repl.ReplaceKnown(*field, "")
	}
	if len(secret) > 0 && len(secret) < 32 {
		return errors.New("credgate: identity jwt_secret must be at least 32 bytes")
	}
	if id.Claim == "" {
		id.Claim = "sub"
	}
	policy := identity.Policy{Issuer: id.Issuer, Audience: id.Audience, Claim: id.Claim}
	reader := &identity.Reader{Header: !id.NoHeader}
	var refresher *identity.Refresher
	if sb := id.Supabase; sb != nil {
		if id.Placeholder != "" {
			return errors.New("credgate: identity takes either placeholder or supabase, not both")
		}
		if err := sb.provision(repl); err != nil {
			return err
		}
		reader.Cookies = append(reader.Cookies, sb.Cookie)
		if id.JWKSURL == "" {
			id.JWKSURL = sb.AuthURL + "/.well-known/jwks.json"
		}
		if policy.Issuer == "" {
			policy.Issuer = sb.ProjectURL + "/auth/v1"
		}
		if policy.Audience == "" {
			policy.Audience = "authenticated"
		}
		// The project's anon and service_role keys are JWTs it signed
		// too: only role authenticated is a signed-in user.
		policy.Role = "authenticated"
		policy.RefuseAnonymous = sb.RefuseAnonymous
		reader.CookieOptions = identity.CookieOptions{Domain: sb.CookieDomain, Secure: sb.CookieSecure}
		if sb.PublishableKey != "" {
			refresher = identity.NewRefresher(sb.AuthURL, sb.PublishableKey, nil)
		}
	} else if id.Cookie == "" {
		id.Cookie = "sb-access-token"
	}
	if id.Cookie != "" {
		reader.Cookies = append(reader.Cookies, id.Cookie)
	}
	if id.Placeholder != "" {
		return nil
	}
	if len(secret) == 0 && id.JWKSURL == "" {
		return errors.New("credgate: identity needs a supabase block, jwt_secret, jwks_url or placeholder")
	}
	var keys *identity.KeySet
	if id.JWKSURL != "" {
		if err := httpURL(id.JWKSURL); err != nil {
			return fmt.Errorf("credgate: identity jwks_url: %w", err)
		}
		keys = identity.NewKeySet(id.JWKSURL, nil)
	}
	v, err := identity.NewVerifier(secret, keys, policy)
	if err != nil {
		return fmt.Errorf("credgate: %w", err)
	}
	reader.Verifier, reader.Refresher = v, refresher
	id.reader = reader
	return nil
}

func (sb *SupabaseIdentity) provision(repl *caddy.Replacer) error {
	sb.ProjectURL = strings.TrimRight(repl.ReplaceKnown(sb.ProjectURL, ""), "/")
	sb.PublishableKey = repl.ReplaceKnown(sb.PublishableKey, "")
	sb.AuthURL = strings.TrimRight(repl.ReplaceKnown(sb.AuthURL, ""), "/")
	sb.Cookie = repl.ReplaceKnown(sb.Cookie, "")
	sb.CookieDomain = repl.ReplaceKnown(sb.CookieDomain, "")
	if err := httpURL(sb.ProjectURL); err != nil {
		return fmt.Errorf("credgate: identity supabase project_url: %w", err)
	}
	if sb.AuthURL == "" {
		sb.AuthURL = sb.ProjectURL + "/auth/v1"
	} else if err := httpURL(sb.AuthURL); err != nil {
		return fmt.Errorf("credgate: identity supabase auth_url: %w", err)
	}
	if sb.Cookie == "" {
		u, _ := url.Parse(sb.ProjectURL)
		// @supabase/supabase-js: `sb-${new URL(url).hostname.split('.')[0]}-auth-token`.
		sb.Cookie = "sb-" + strings.Split(u.Hostname(), ".")[0] + "-auth-token"
	}
	return nil
}

func httpURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", raw)
	}
	return nil
}

// read returns the request's identity. A refreshed session's cookies are
// set on w and replace the stale ones in r, so the app behind credgate
// sees the same session as the browser; with identity.NoRefresh nothing
// is written.
func (id *Identity) read(w http.ResponseWriter, r *http.Request, mode identity.Mode) identity.Identity {
	if id.Placeholder != "" {
		repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl == nil {
			return identity.Identity{Result: identity.Missing}
		}
		v := repl.ReplaceKnown(id.Placeholder, "")
		if v == "" {
			return identity.Identity{Result: identity.Missing}
		}
		if user := validUUID(v); user != "" {
			return identity.Identity{UserID: user, Result: identity.OK}
		}
		return identity.Identity{Result: identity.NotUser}
	}
	ctx, cancel := context.WithTimeout(r.Context(), identityBudget)
	defer cancel()
	got := id.reader.Read(ctx, r, mode)
	if len(got.SetCookies) > 0 {
		for _, c := range got.SetCookies {
			http.SetCookie(w, c)
		}
		// A response that sets a session must not be cached, as
		// @supabase/ssr's own responses say.
		w.Header().Set("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0")
		identity.ReplaceRequestCookies(r, got.SetCookies)
	}
	return got
}

func validUUID(s string) string {
	u, err := uuid.Parse(s)
	if err != nil {
		return ""
	}
	return u.String()
}

// SignDevToken returns an HS256 JWT for userID, valid for ttl, for local
// development with `caddy credgate devtoken` (identity.SignDevToken).
func SignDevToken(userID, secret string, ttl time.Duration) (string, error) {
	return identity.SignDevToken(userID, secret, "", ttl)
}
