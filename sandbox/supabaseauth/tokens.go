package supabaseauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// signer is a signing method with its key and the kid to put in the
// header ("" for none).
type signer struct {
	method jwt.SigningMethod
	key    any
	kid    string
}

// currentSignerLocked is the signer access tokens are issued with. Called
// with s.mu held.
func (s *Server) currentSignerLocked() (signer, error) {
	if s.signerKID != "" {
		return s.keySignerLocked(s.signerKID)
	}
	return s.secretSigner()
}

func (s *Server) keySignerLocked(kid string) (signer, error) {
	k, ok := s.keys[kid]
	if !ok {
		return signer{}, fmt.Errorf("%w %q", ErrUnknownKey, kid)
	}
	return signer{method: jwt.SigningMethodES256, key: k.priv, kid: k.kid}, nil
}

func (s *Server) secretSigner() (signer, error) {
	if len(s.secret) == 0 {
		return signer{}, ErrNoSigningKey
	}
	// Legacy HS256 tokens carry no kid; GoTrue verifies a kid-less HS256
	// token with the secret.
	return signer{method: jwt.SigningMethodHS256, key: s.secret}, nil
}

// claimsLocked are the claims GoTrue puts in an access token
// (v0hooks.AccessTokenClaims), with aud as a single string as GoTrue
// serializes it. Called with s.mu held.
func (s *Server) claimsLocked(rec *userRecord, se *session, now time.Time) map[string]any {
	return map[string]any{
		"aud":           Audience,
		"exp":           now.Add(s.ttl).Unix(),
		"iat":           now.Unix(),
		"iss":           s.issuer,
		"sub":           rec.id,
		"email":         rec.email,
		"phone":         rec.phone,
		"app_metadata":  cloneJSON(rec.appMeta),
		"user_metadata": cloneJSON(rec.userMeta),
		"role":          rec.role,
		"aal":           "aal1",
		"amr":           []any{map[string]any{"method": se.amrMethod, "timestamp": se.amrAt.Unix()}},
		"session_id":    se.id,
		"is_anonymous":  rec.anonymous,
	}
}

// sessionLocked answers a grant for se with refreshToken, signing a new
// access token with the current signer. It changes no state. Called with
// s.mu held.
func (s *Server) sessionLocked(rec *userRecord, se *session, refreshToken string, now time.Time) (Session, error) {
	sg, err := s.currentSignerLocked()
	if err != nil {
		return Session{}, err
	}
	claims := s.claimsLocked(rec, se, now)
	access, err := sign(claims, sg, nil)
	if err != nil {
		return Session{}, err
	}
	exp, _ := claims["exp"].(int64)
	return Session{
		AccessToken:  access,
		TokenType:    "bearer",
		ExpiresIn:    int(s.ttl / time.Second),
		ExpiresAt:    exp,
		RefreshToken: refreshToken,
		User:         rec.userJSON(),
	}, nil
}

// sign signs claims. header values override the JWT header; a nil value
// deletes that header.
func sign(claims map[string]any, sg signer, header map[string]any) (tok string, err error) {
	if sg.method == nil {
		return "", errors.New("supabaseauth: no signing method")
	}
	// golang-jwt's signers dereference what they are given: a malformed
	// caller key (an ECDSA key without a curve, an RSA key without a
	// modulus) would panic. That is bad input, so it becomes an error.
	defer func() {
		if r := recover(); r != nil {
			tok, err = "", fmt.Errorf("supabaseauth: signing with %s: %v", sg.method.Alg(), r)
		}
	}()
	t := jwt.NewWithClaims(sg.method, jwt.MapClaims(claims))
	if sg.kid != "" {
		t.Header["kid"] = sg.kid
	}
	for k, v := range header {
		if v == nil {
			delete(t.Header, k)
		} else {
			t.Header[k] = v
		}
	}
	return t.SignedString(sg.key)
}

// TokenOption changes an access token made by Server.Token.
type TokenOption func(*tokenSpec)

type tokenSpec struct {
	claims map[string]any
	header map[string]any
	// signer: custom if set, else the server key kid if set, else the
	// secret if secret, else the current signer.
	custom *signer
	kid    string
	secret bool
}

// WithClaim sets a claim (adding or replacing it), e.g.
// WithClaim("role", "anon") or WithClaim("aud", "someone-else").
func WithClaim(name string, value any) TokenOption {
	return func(t *tokenSpec) { t.claims[name] = value }
}

// WithoutClaim removes a claim, e.g. WithoutClaim("exp").
func WithoutClaim(name string) TokenOption {
	return func(t *tokenSpec) { delete(t.claims, name) }
}

// WithExpiresAt sets exp, e.g. to a past time for an expired token.
func WithExpiresAt(exp time.Time) TokenOption {
	return WithClaim("exp", exp.Unix())
}

// WithIssuedAt sets iat.
func WithIssuedAt(iat time.Time) TokenOption {
	return WithClaim("iat", iat.Unix())
}

// WithHeader sets a JWT header field (e.g. "kid" to one nobody
// publishes); a nil value removes it. Header fields are set last, after
// the signer's kid.
func WithHeader(name string, value any) TokenOption {
	return func(t *tokenSpec) { t.header[name] = value }
}

// WithSecret signs HS256 with Config.JWTSecret, whatever the current
// signer.
func WithSecret() TokenOption {
	return func(t *tokenSpec) { t.custom, t.kid, t.secret = nil, "", true }
}

// WithKey signs ES256 with the server's key kid, published or retired.
func WithKey(kid string) TokenOption {
	return func(t *tokenSpec) { t.custom, t.kid, t.secret = nil, kid, false }
}

// WithSigner signs with any method and key, e.g. a key the server does
// not know, a wrong HS256 secret, or jwt.SigningMethodNone with
// jwt.UnsafeAllowNoneSignatureType. kid, when not empty, goes in the
// header.
func WithSigner(method jwt.SigningMethod, key any, kid string) TokenOption {
	return func(t *tokenSpec) { t.custom, t.kid, t.secret = &signer{method: method, key: key, kid: kid}, "", false }
}

// Token returns an access token for u with the claims GoTrue would issue,
// changed by opts, for tests of refusals (expired, role anon, wrong aud, a
// key nobody publishes...). u is registered (or updated) and the token
// belongs to a new session, so that an unchanged token passes GET /user.
func (s *Server) Token(u User, opts ...TokenOption) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	rec, err := s.upsertUserLocked(u, now)
	if err != nil {
		return "", err
	}
	refresh, err := s.newRefreshTokenLocked()
	if err != nil {
		return "", err
	}
	se := &session{id: uuid.NewString(), userID: rec.id, created: now, amrMethod: amrMethod(rec), amrAt: now}
	spec := tokenSpec{claims: s.claimsLocked(rec, se, now), header: map[string]any{}}
	for _, o := range opts {
		if o != nil {
			o(&spec)
		}
	}
	var sg signer
	switch {
	case spec.custom != nil:
		sg = *spec.custom
	case spec.kid != "":
		sg, err = s.keySignerLocked(spec.kid)
	case spec.secret:
		if len(s.secret) == 0 {
			err = ErrNoSecret
		} else {
			sg, err = s.secretSigner()
		}
	default:
		sg, err = s.currentSignerLocked()
	}
	if err != nil {
		return "", err
	}
	tok, err := sign(spec.claims, sg, spec.header)
	if err != nil {
		return "", err
	}
	s.storeSessionLocked(se, refresh)
	return tok, nil
}

// jwk is one public key as Supabase's JWKS lists it (jwx's output, with
// the ext flag Supabase adds).
type jwk struct {
	Alg    string   `json:"alg"`
	Crv    string   `json:"crv"`
	Ext    bool     `json:"ext"`
	KeyOps []string `json:"key_ops"`
	Kid    string   `json:"kid"`
	Kty    string   `json:"kty"`
	Use    string   `json:"use"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// jwksLocked is the JWKS body: published EC keys only, never the HS256
// secret ({"keys":[]} for an HS256-only project). Called with s.mu held.
func (s *Server) jwksLocked() map[string][]jwk {
	keys := make([]jwk, 0, len(s.published))
	for _, kid := range s.published {
		k := s.keys[kid]
		keys = append(keys, jwk{Alg: "ES256", Crv: "P-256", Ext: true, KeyOps: []string{"verify"},
			Kid: k.kid, Kty: "EC", Use: "sig", X: k.x, Y: k.y})
	}
	return map[string][]jwk{"keys": keys}
}

// p256Coordinates validates key as a usable P-256 private key and returns
// its public coordinates, base64url, 32 bytes each.
func p256Coordinates(key *ecdsa.PrivateKey) (x, y string, err error) {
	if key == nil {
		return "", "", errors.New("supabaseauth: nil key")
	}
	if key.Curve != elliptic.P256() {
		return "", "", errors.New("supabaseauth: key is not P-256 (ES256)")
	}
	// crypto/ecdsa dereferences the coordinates and scalar; a key built
	// by hand without them would panic rather than fail.
	defer func() {
		if r := recover(); r != nil {
			x, y, err = "", "", fmt.Errorf("supabaseauth: malformed key: %v", r)
		}
	}()
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return "", "", fmt.Errorf("supabaseauth: malformed public key: %w", err)
	}
	ek, err := key.ECDH()
	if err != nil {
		return "", "", fmt.Errorf("supabaseauth: malformed private key: %w", err)
	}
	if string(ek.PublicKey().Bytes()) != string(pub) {
		return "", "", errors.New("supabaseauth: public key does not match private key")
	}
	// pub is 0x04 || X || Y.
	enc := base64.RawURLEncoding
	return enc.EncodeToString(pub[1:33]), enc.EncodeToString(pub[33:65]), nil
}
