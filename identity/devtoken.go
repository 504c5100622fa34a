package identity

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// SignDevToken signs an HS256 JWT for userID, valid for ttl, for local
// development (`caddy credgate devtoken`), with Supabase Auth's user
// claims (role and aud authenticated) and, when issuer is set, its iss,
// so that a handler whose identity is a supabase block accepts it too.
func SignDevToken(userID, secret, issuer string, ttl time.Duration) (string, error) {
	if len(secret) < 32 {
		return "", errors.New("the secret must be at least 32 bytes (the same value as the handler's jwt_secret)")
	}
	if _, err := uuid.Parse(userID); err != nil {
		return "", errors.New("the user id must be a UUID")
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"sub": userID, "iat": now.Unix(), "exp": now.Add(ttl).Unix(), "role": "authenticated",
		"aud": "authenticated",
	}
	if issuer != "" {
		claims["iss"] = issuer
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}
