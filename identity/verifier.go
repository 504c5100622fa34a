package identity

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// leeway absorbs clock skew between Supabase Auth and credgate.
const leeway = 30 * time.Second

// Policy says which tokens name a user.
type Policy struct {
	// Issuer, when set, must equal the iss claim: a Supabase
	// project's is "<project_url>/auth/v1".
	Issuer string
	// Audience, when set, must be in the aud claim ("authenticated"
	// for a Supabase user).
	Audience string
	// Role, when set, must equal the role claim: "authenticated" keeps
	// the project's anon and service_role keys (and any token with
	// role anon) from passing for a user.
	Role string
	// RefuseAnonymous refuses tokens with is_anonymous true.
	RefuseAnonymous bool
	// Claim holds the user id, a UUID. Default "sub".
	Claim string
}

// Verifier checks access tokens with an HS256 secret, a JWKS, or both at
// once (a Supabase project moving to asymmetric keys has tokens of both
// kinds live): the token's alg chooses, and the kid picks the JWKS key.
type Verifier struct {
	secret []byte
	keys   *KeySet
	policy Policy
	parser *jwt.Parser
	now    func() time.Time
}

// asymmetric are the algorithms a JWKS key may verify. "none" and the
// HMACs are never among them, so a public key cannot be used as an HMAC
// secret.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// NewVerifier returns a verifier. secret (HS256) and keys (the JWKS) may
// each be empty or nil, not both.
func NewVerifier(secret []byte, keys *KeySet, policy Policy) (*Verifier, error) {
	if len(secret) == 0 && keys == nil {
		return nil, errors.New("identity: a verifier needs an HS256 secret, a JWKS, or both")
	}
	if policy.Claim == "" {
		policy.Claim = "sub"
	}
	var methods []string
	if len(secret) > 0 {
		methods = append(methods, "HS256")
	}
	if keys != nil {
		methods = append(methods, asymmetric...)
	}
	// Claims are checked here, not by the parser, so that an expired
	// token that is otherwise good can be told apart (and refreshed).
	parser := jwt.NewParser(jwt.WithValidMethods(methods), jwt.WithoutClaimsValidation(), jwt.WithJSONNumber())
	return &Verifier{secret: secret, keys: keys, policy: policy, parser: parser, now: time.Now}, nil
}

// Verify checks raw and returns the user id it names with OK, or the
// reason it names none. Expired means every other check passed.
func (v *Verifier) Verify(ctx context.Context, raw string) (string, Result) {
	if raw == "" || len(raw) > maxTokenBytes || strings.Count(raw, ".") != 2 {
		return "", Malformed
	}
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		alg, _ := t.Header["alg"].(string)
		if alg == "HS256" {
			return v.secret, nil
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, ErrUnknownKID
		}
		return v.keys.Key(ctx, kid, alg)
	})
	switch {
	case err == nil:
	case errors.Is(err, ErrKeysUnavailable):
		return "", KeysUnavailable
	case errors.Is(err, ErrUnknownKID):
		return "", UnknownKID
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "", Malformed
	default:
		// A bad signature, or an alg no configured key verifies.
		return "", BadSignature
	}
	return v.checkClaims(claims)
}

func (v *Verifier) checkClaims(claims jwt.MapClaims) (string, Result) {
	p := v.policy
	// The role first: the project's anon and service_role keys are
	// signed by it but are not users, and saying so is what helps.
	if p.Role != "" {
		if role, _ := claims["role"].(string); role != p.Role {
			return "", NotUser
		}
	}
	if p.Issuer != "" {
		if iss, _ := claims["iss"].(string); iss != p.Issuer {
			return "", WrongIssuer
		}
	}
	if p.Audience != "" {
		aud, err := claims.GetAudience()
		if err != nil || !slices.Contains(aud, p.Audience) {
			return "", WrongAudience
		}
	}
	sub, _ := claims[p.Claim].(string)
	u, err := uuid.Parse(sub)
	if err != nil {
		return "", NotUser
	}
	if anon, _ := claims["is_anonymous"].(bool); anon && p.RefuseAnonymous {
		return "", Anonymous
	}
	now := v.now()
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return "", Malformed // credgate requires an expiry
	}
	if nbf, err := claims.GetNotBefore(); err != nil || (nbf != nil && now.Add(leeway).Before(nbf.Time)) {
		return "", Malformed
	}
	if now.Add(-leeway).After(exp.Time) {
		return u.String(), Expired
	}
	return u.String(), OK
}
