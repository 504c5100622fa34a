package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Identity says how the handler learns who the user is (DESIGN §7): a
// Caddy placeholder set by another auth module, or a JWT (Supabase style)
// from a cookie or the Authorization header, verified with an HS256 secret
// or a JWKS URL. The user id must be a UUID (social_accounts.user_id).
type Identity struct {
	// Placeholder, such as "{http.auth.user.id}", takes the id from
	// another Caddy module; when set, no JWT is read.
	Placeholder string `json:"placeholder,omitempty"`
	// JWTSecret verifies HS256 tokens, normally
	// "{env.SUPABASE_JWT_SECRET}".
	JWTSecret string `json:"jwt_secret,omitempty"`
	// JWKSURL verifies RS256/ES256/EdDSA tokens by key id. Fetched on
	// first use, then refreshed in the background.
	JWKSURL string `json:"jwks_url,omitempty"`
	// Cookie holding the token. Default "sb-access-token".
	Cookie string `json:"cookie,omitempty"`
	// NoHeader stops reading "Authorization: Bearer <token>". Default
	// false: the header is read, after the cookie.
	NoHeader bool `json:"no_header,omitempty"`
	// Claim holding the user id. Default "sub".
	Claim string `json:"claim,omitempty"`
	// Issuer and Audience, if set, must match the token's.
	Issuer   string `json:"issuer,omitempty"`
	Audience string `json:"audience,omitempty"`

	secret   []byte
	parser   *jwt.Parser
	ctx      context.Context
	jwksOnce sync.Once
	jwks     keyfunc.Keyfunc
	jwksErr  error
}

func (id *Identity) provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	id.secret = []byte(repl.ReplaceKnown(id.JWTSecret, ""))
	id.JWKSURL = repl.ReplaceKnown(id.JWKSURL, "")
	if id.Placeholder == "" && len(id.secret) == 0 && id.JWKSURL == "" {
		return errors.New("credgate: identity needs jwt_secret, jwks_url or placeholder")
	}
	if len(id.secret) > 0 && len(id.secret) < 32 {
		return errors.New("credgate: identity jwt_secret must be at least 32 bytes")
	}
	if id.Cookie == "" {
		id.Cookie = "sb-access-token"
	}
	if id.Claim == "" {
		id.Claim = "sub"
	}
	methods := []string{"RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"}
	if len(id.secret) > 0 {
		methods = []string{"HS256"}
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithExpirationRequired(), jwt.WithLeeway(30 * time.Second)}
	if id.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(id.Issuer))
	}
	if id.Audience != "" {
		opts = append(opts, jwt.WithAudience(id.Audience))
	}
	id.parser = jwt.NewParser(opts...)
	id.ctx = ctx
	return nil
}

// userID returns the authenticated user's id, or "" when the request
// carries no valid identity.
func (id *Identity) userID(r *http.Request) string {
	if id.Placeholder != "" {
		repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl == nil {
			return ""
		}
		return validUUID(repl.ReplaceKnown(id.Placeholder, ""))
	}
	// The cookie first, then the header: a stale cookie must not hide a
	// valid bearer token.
	if c, err := r.Cookie(id.Cookie); err == nil {
		if user := id.verify(c.Value); user != "" {
			return user
		}
	}
	if id.NoHeader {
		return ""
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return id.verify(raw)
}

// verify returns the user id of a valid token, or "".
func (id *Identity) verify(raw string) string {
	if raw == "" || len(raw) > 8192 {
		return ""
	}
	claims := jwt.MapClaims{}
	if _, err := id.parser.ParseWithClaims(raw, claims, id.key); err != nil {
		return ""
	}
	sub, _ := claims[id.Claim].(string)
	return validUUID(sub)
}

func (id *Identity) key(t *jwt.Token) (any, error) {
	if len(id.secret) > 0 {
		return id.secret, nil
	}
	id.jwksOnce.Do(func() {
		// The first request with a token fetches the key set; keyfunc
		// refreshes it in the background until the config unloads.
		id.jwks, id.jwksErr = keyfunc.NewDefaultCtx(id.ctx, []string{id.JWKSURL})
	})
	if id.jwksErr != nil {
		return nil, fmt.Errorf("jwks: %w", id.jwksErr)
	}
	return id.jwks.Keyfunc(t)
}

func validUUID(s string) string {
	u, err := uuid.Parse(s)
	if err != nil {
		return ""
	}
	return u.String()
}

// SignDevToken returns an HS256 JWT for userID, valid for ttl, for local
// development with `caddy credgate devtoken`.
func SignDevToken(userID, secret string, ttl time.Duration) (string, error) {
	if len(secret) < 32 {
		return "", errors.New("the secret must be at least 32 bytes (the same value as the handler's jwt_secret)")
	}
	if validUUID(userID) == "" {
		return "", errors.New("the user id must be a UUID")
	}
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": userID, "iat": now.Unix(), "exp": now.Add(ttl).Unix(), "role": "authenticated",
	}).SignedString([]byte(secret))
}
