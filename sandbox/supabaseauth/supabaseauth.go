// Package supabaseauth emulates the parts of Supabase Auth (GoTrue) that
// credgate talks to, so that credgate's tests and demo can run a Supabase
// session end to end without a Supabase project: the refresh-token grant
// with its rotation and reuse rules, the password grant, the JWKS that
// asymmetric projects publish, and GET /user.
//
// It is written from GoTrue's documented and published behaviour
// (supabase/auth: internal/tokens/service.go, internal/api/token.go,
// internal/api/auth.go, internal/api/errors.go, internal/api/jwks.go),
// independently of credgate's identity package, so that it catches that
// client's mistakes instead of sharing them. Error bodies are GoTrue's,
// byte for byte where it matters to a client (status, error_code, msg),
// and the gateway in front of it answers a missing or wrong apikey as
// Supabase's does.
//
// Refresh tokens follow GoTrue's refresh token algorithm v2 (a per-session
// counter): using the active token rotates it; presenting an older token of
// the same session is tolerated, and answered with the session's current
// token, when it is the one just before the active token (the client failed
// to save the last answer) or when the session was refreshed less than
// ReuseInterval ago (concurrent refreshes); any other reuse ends the whole
// session, so its tokens, refresh and access alike, stop working. Tokens
// look like the legacy 12-character tokens hosted projects hand out.
//
// A Server is an http.Handler serving Supabase's paths under /auth/v1; use
// it with httptest.NewServer or mount it in a demo. All its methods are safe
// for concurrent use.
package supabaseauth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Paths served, as Supabase serves them (relative to the project URL).
const (
	TokenPath = "/auth/v1/token"
	UserPath  = "/auth/v1/user"
	JWKSPath  = "/auth/v1/.well-known/jwks.json"
)

// Defaults, as a hosted Supabase project has them.
const (
	// DefaultIssuer is the iss of a project whose ref is
	// abcdefghijklmnopqrst, the ref credgate's fixtures use.
	DefaultIssuer = "https://abcdefghijklmnopqrst.supabase.co/auth/v1"
	// DefaultReuseInterval is GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL
	// on hosted projects.
	DefaultReuseInterval = 10 * time.Second
	// DefaultAccessTTL is GOTRUE_JWT_EXP.
	DefaultAccessTTL = time.Hour
	// Audience is the aud of every user token (GOTRUE_JWT_AUD).
	Audience = "authenticated"
	// DefaultRole is a signed-in user's role claim.
	DefaultRole = "authenticated"
)

// Errors returned by the Server's methods.
var (
	// ErrNoSecret: HS256 was asked for but Config.JWTSecret is empty.
	ErrNoSecret = errors.New("supabaseauth: no JWTSecret configured")
	// ErrNoSigningKey: there is neither a current EC key nor a secret to
	// sign access tokens with.
	ErrNoSigningKey = errors.New("supabaseauth: no signing key (set Config.JWTSecret or add a key)")
	// ErrUnknownKey: no key has that kid.
	ErrUnknownKey = errors.New("supabaseauth: unknown key id")
)

// Config configures a Server. The zero value is usable: an ES256-only
// project with a generated key and GoTrue's default lifetimes.
type Config struct {
	// Issuer is the iss claim, e.g.
	// "https://abcdefghijklmnopqrst.supabase.co/auth/v1". Default
	// DefaultIssuer.
	Issuer string
	// JWTSecret signs HS256 tokens (Supabase's legacy JWT secret), and
	// HS256 is then the first signer. Optional: without it the Server
	// starts with a generated P-256 key, as new projects do.
	JWTSecret []byte
	// APIKey, when set, must be sent as the apikey header (or query
	// parameter) on every path but the JWKS, as Supabase's gateway
	// requires of the project's publishable (anon) key; otherwise the
	// answer is the gateway's 401.
	APIKey string
	// ReuseInterval is GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: an
	// older refresh token of a session refreshed less than this long ago
	// is answered with the session's current token instead of ending the
	// session. Zero means DefaultReuseInterval; negative means none.
	ReuseInterval time.Duration
	// AccessTTL is the access token lifetime. Default DefaultAccessTTL.
	AccessTTL time.Duration
	// Now is the clock (tests move it). Default time.Now.
	Now func() time.Time
}

// User is an account. Only ID, Email, Anonymous, Role and UserMetadata
// are usually needed.
type User struct {
	// ID is a UUID (GoTrue's sub). Empty: one is generated.
	ID string
	// Email is stored lower-cased, as GoTrue stores it.
	Email string
	// Phone, optional, for the password grant's phone login.
	Phone string
	// Anonymous marks an anonymous sign-in (is_anonymous).
	Anonymous bool
	// Role is the role claim. Default DefaultRole.
	Role string
	// UserMetadata is user_metadata; it must marshal to JSON.
	UserMetadata map[string]any
	// AppMetadata is merged over GoTrue's default app_metadata
	// ({"provider": "email", "providers": ["email"]}, or "phone" or
	// "anonymous"); it must marshal to JSON.
	AppMetadata map[string]any
}

// Session is GoTrue's answer to a grant (AccessTokenResponse).
type Session struct {
	AccessToken  string         `json:"access_token"`
	TokenType    string         `json:"token_type"`
	ExpiresIn    int            `json:"expires_in"`
	ExpiresAt    int64          `json:"expires_at"`
	RefreshToken string         `json:"refresh_token"`
	User         map[string]any `json:"user"`
}

// Counts are what the Server has seen, for tests to assert on.
type Counts struct {
	// JWKSFetches counts requests to the JWKS, faulted ones included.
	JWKSFetches int
	// RefreshRequests counts refresh_token grants that got past the
	// gateway, whatever the outcome.
	RefreshRequests int
	// Refreshes counts refresh_token grants answered 200 (rotations and
	// tolerated reuses).
	Refreshes int
	// ReusesTolerated counts older refresh tokens answered with the
	// session's current one.
	ReusesTolerated int
	// ReusesRejected counts reuses that ended a session.
	ReusesRejected int
	// PasswordSignIns counts password grants answered 200.
	PasswordSignIns int
	// UserRequests counts GET /user requests that got past the gateway.
	UserRequests int
	// BadAPIKey counts requests the gateway refused.
	BadAPIKey int
}

// Server is the emulated Supabase Auth. Create it with New.
type Server struct {
	issuer string
	secret []byte
	apiKey string
	reuse  time.Duration
	ttl    time.Duration
	now    func() time.Time
	mux    *http.ServeMux

	// mu guards everything below. One lock for all state is what makes a
	// refresh atomic, as GoTrue's row locks make it.
	mu        sync.Mutex
	users     map[string]*userRecord // by ID
	emails    map[string]string      // lower-cased email → user ID
	phones    map[string]string      // phone → user ID
	sessions  map[string]*session    // by session ID
	tokens    map[string]*issuedToken
	keys      map[string]*signingKey // by kid, published or retired
	published []string               // kids in the JWKS, in publication order
	signerKID string                 // "" means HS256 with the secret
	jwksFault int
	counts    Counts
}

type userRecord struct {
	id, email, phone, role string
	anonymous              bool
	appMeta, userMeta      map[string]any
	password               [32]byte // SHA-256; only compared, never shown
	hasPassword            bool
	created, updated       time.Time
	lastSignIn             time.Time
}

// session is GoTrue's sessions row with the v2 refresh-token counter.
type session struct {
	id        string
	userID    string
	counter   int64    // counter of the active refresh token
	active    string   // the active refresh token
	issued    []string // every refresh token of the session, for logout
	created   time.Time
	refreshed time.Time // zero until the first refresh
	amrMethod string
	amrAt     time.Time
}

// lastRefreshed is GoTrue's Session.LastRefreshedAt(nil).
func (se *session) lastRefreshed() time.Time {
	if se.refreshed.IsZero() {
		return se.created
	}
	return se.refreshed
}

type issuedToken struct {
	sess    *session
	counter int64
}

type signingKey struct {
	kid       string
	priv      *ecdsa.PrivateKey
	x, y      string // base64url coordinates, for the JWKS
	published bool
}

// New returns a Server configured by cfg.
func New(cfg Config) *Server {
	s := &Server{
		issuer:   cfg.Issuer,
		secret:   bytes.Clone(cfg.JWTSecret),
		apiKey:   cfg.APIKey,
		reuse:    cfg.ReuseInterval,
		ttl:      cfg.AccessTTL,
		now:      cfg.Now,
		mux:      http.NewServeMux(),
		users:    map[string]*userRecord{},
		emails:   map[string]string{},
		phones:   map[string]string{},
		sessions: map[string]*session{},
		tokens:   map[string]*issuedToken{},
		keys:     map[string]*signingKey{},
	}
	if s.issuer == "" {
		s.issuer = DefaultIssuer
	}
	if s.reuse == 0 {
		s.reuse = DefaultReuseInterval
	}
	if s.ttl <= 0 {
		s.ttl = DefaultAccessTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	if len(s.secret) == 0 {
		// A project without the legacy secret signs asymmetrically
		// only. If key generation failed (it cannot, since Go 1.24),
		// signing reports ErrNoSigningKey instead.
		_, _ = s.RotateKey()
	}
	s.mux.HandleFunc("POST "+TokenPath, s.handleToken)
	s.mux.HandleFunc("GET "+UserPath, s.handleUser)
	s.mux.HandleFunc("GET "+JWKSPath, s.handleJWKS)
	return s
}

// SignIn signs u in and returns a new session, a new refresh-token
// family, with an access token signed by the current signer, as a password
// sign-in would. u is registered, or replaces the stored user with its ID
// (without an ID: with its email or phone).
func (s *Server) SignIn(u User) (Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	rec, err := s.upsertUserLocked(u, now)
	if err != nil {
		return Session{}, err
	}
	return s.signInLocked(rec, now)
}

// AddUser registers u with a password, for the password grant. u.Email
// (or u.Phone) is required.
func (s *Server) AddUser(u User, password string) error {
	if u.Email == "" && u.Phone == "" {
		return errors.New("supabaseauth: AddUser needs an email or a phone")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := s.upsertUserLocked(u, s.now())
	if err != nil {
		return err
	}
	rec.password = sha256.Sum256([]byte(password))
	rec.hasPassword = true
	return nil
}

// AdoptRefreshToken makes a refresh token made elsewhere (a fixture) the
// valid, unused token of a new session for u. A token the Server already
// knows is first logged out with its whole session, so that afterwards it
// is unused whatever happened to it before.
func (s *Server) AdoptRefreshToken(token string, u User) error {
	return s.AdoptSession(uuid.NewString(), token, u)
}

// AdoptSession is AdoptRefreshToken with the session's ID chosen too, so
// that access tokens made elsewhere with that session_id claim (fixtures)
// are accepted by GET /user. An existing session with that ID is replaced.
func (s *Server) AdoptSession(sessionID, refreshToken string, u User) error {
	if refreshToken == "" {
		return errors.New("supabaseauth: empty refresh token")
	}
	if _, err := uuid.Parse(sessionID); err != nil {
		return fmt.Errorf("supabaseauth: session id %q is not a UUID", sessionID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	rec, err := s.upsertUserLocked(u, now)
	if err != nil {
		return err
	}
	if old, ok := s.tokens[refreshToken]; ok {
		s.logoutLocked(old.sess)
	}
	if old, ok := s.sessions[sessionID]; ok {
		s.logoutLocked(old)
	}
	s.newSessionLocked(rec, sessionID, refreshToken, amrMethod(rec), now)
	return nil
}

// AddSigningKey publishes key (P-256) in the JWKS under kid and makes it
// the current signer (ES256). A kid already known is replaced.
func (s *Server) AddSigningKey(kid string, key *ecdsa.PrivateKey) error {
	if kid == "" {
		return errors.New("supabaseauth: empty kid")
	}
	x, y, err := p256Coordinates(key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[kid] = &signingKey{kid: kid, priv: key, x: x, y: y, published: true}
	if !slices.Contains(s.published, kid) {
		s.published = append(s.published, kid)
	}
	s.signerKID = kid
	return nil
}

// RotateKey generates a P-256 key with a UUID kid, as Supabase names
// keys, publishes it and makes it the current signer. Earlier keys stay
// published until retired.
func (s *Server) RotateKey() (kid string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("supabaseauth: generating a key: %w", err)
	}
	kid = uuid.NewString()
	if err := s.AddSigningKey(kid, key); err != nil {
		return "", err
	}
	return kid, nil
}

// RetireKey removes kid from the JWKS; GET /user then refuses tokens
// signed with it, as GoTrue refuses a revoked key's. If it is the current
// signer it keeps signing, which makes tokens nobody can verify: a fault
// to test, not a state to stay in. Unknown kids are ignored.
func (s *Server) RetireKey(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[kid]; ok {
		k.published = false
	}
	s.published = slices.DeleteFunc(s.published, func(k string) bool { return k == kid })
}

// SignWithSecret makes HS256 with Config.JWTSecret the current signer
// again. Without a secret it returns ErrNoSecret and changes nothing.
func (s *Server) SignWithSecret() error {
	if len(s.secret) == 0 {
		return ErrNoSecret
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signerKID = ""
	return nil
}

// SigningKID is the current signer's kid, "" when it is HS256.
func (s *Server) SigningKID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signerKID
}

// SetJWKSFault makes the JWKS answer status (400–599) instead of the
// keys; 0 makes it healthy again. Any other status is refused.
func (s *Server) SetJWKSFault(status int) error {
	if status != 0 && (status < 400 || status > 599) {
		return fmt.Errorf("supabaseauth: JWKS fault status %d is not 0 or 400–599", status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwksFault = status
	return nil
}

// Counts returns what the Server has seen so far.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// ServeHTTP serves TokenPath, UserPath and JWKSPath. Every path but the
// JWKS is behind the gateway's apikey check, as on Supabase, where
// /auth/v1/.well-known/jwks.json is open.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != JWKSPath && !s.gateway(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// upsertUserLocked validates u and stores it, keyed by ID. Called with
// s.mu held.
func (s *Server) upsertUserLocked(u User, now time.Time) (*userRecord, error) {
	email := strings.ToLower(strings.TrimSpace(u.Email))
	id := u.ID
	switch {
	case id != "":
		parsed, err := uuid.Parse(id)
		if err != nil {
			// GoTrue's sub is a UUID, and GET /user refuses any other.
			return nil, fmt.Errorf("supabaseauth: user id %q is not a UUID", u.ID)
		}
		id = parsed.String()
	case email != "" && s.emails[email] != "":
		// Signing in again by email is the same account.
		id = s.emails[email]
	case u.Phone != "" && s.phones[u.Phone] != "":
		id = s.phones[u.Phone]
	default:
		id = uuid.NewString()
	}
	if other, ok := s.emails[email]; ok && email != "" && other != id {
		return nil, fmt.Errorf("supabaseauth: email %q belongs to user %s", email, other)
	}
	if other, ok := s.phones[u.Phone]; ok && u.Phone != "" && other != id {
		return nil, fmt.Errorf("supabaseauth: phone %q belongs to user %s", u.Phone, other)
	}
	userMeta, err := normalizeJSON(u.UserMetadata)
	if err != nil {
		return nil, fmt.Errorf("supabaseauth: user metadata: %w", err)
	}
	extraApp, err := normalizeJSON(u.AppMetadata)
	if err != nil {
		return nil, fmt.Errorf("supabaseauth: app metadata: %w", err)
	}
	provider := "email"
	switch {
	case u.Anonymous:
		provider = "anonymous"
	case email == "" && u.Phone != "":
		provider = "phone"
	}
	appMeta := map[string]any{"provider": provider, "providers": []any{provider}}
	for k, v := range extraApp {
		appMeta[k] = v
	}
	role := u.Role
	if role == "" {
		role = DefaultRole
	}
	rec, ok := s.users[id]
	if !ok {
		rec = &userRecord{id: id, created: now}
		s.users[id] = rec
	}
	if rec.email != "" {
		delete(s.emails, rec.email)
	}
	if rec.phone != "" {
		delete(s.phones, rec.phone)
	}
	rec.email, rec.phone, rec.role, rec.anonymous = email, u.Phone, role, u.Anonymous
	rec.appMeta, rec.userMeta, rec.updated = appMeta, userMeta, now
	if email != "" {
		s.emails[email] = id
	}
	if u.Phone != "" {
		s.phones[u.Phone] = id
	}
	return rec, nil
}

// signInLocked starts a session for rec and answers it. Called with s.mu
// held.
func (s *Server) signInLocked(rec *userRecord, now time.Time) (Session, error) {
	token, err := s.newRefreshTokenLocked()
	if err != nil {
		return Session{}, err
	}
	// The session is only kept if its access token could be signed, as
	// GoTrue's transaction would roll back.
	se := &session{id: uuid.NewString(), userID: rec.id, created: now, amrMethod: amrMethod(rec), amrAt: now}
	prevSignIn := rec.lastSignIn
	rec.lastSignIn = now
	resp, err := s.sessionLocked(rec, se, token, now)
	if err != nil {
		rec.lastSignIn = prevSignIn
		return Session{}, err
	}
	s.storeSessionLocked(se, token)
	return resp, nil
}

// newSessionLocked stores a session whose active token is token. Called
// with s.mu held.
func (s *Server) newSessionLocked(rec *userRecord, id, token, method string, now time.Time) {
	s.storeSessionLocked(&session{id: id, userID: rec.id, created: now, amrMethod: method, amrAt: now}, token)
}

func (s *Server) storeSessionLocked(se *session, token string) {
	se.active = token
	se.issued = append(se.issued, token)
	s.sessions[se.id] = se
	s.tokens[token] = &issuedToken{sess: se, counter: se.counter}
}

// logoutLocked deletes a session and all its refresh tokens, as GoTrue's
// LogoutSession does on detected reuse. Called with s.mu held.
func (s *Server) logoutLocked(se *session) {
	for _, t := range se.issued {
		if it, ok := s.tokens[t]; ok && it.sess == se {
			delete(s.tokens, t)
		}
	}
	if s.sessions[se.id] == se {
		delete(s.sessions, se.id)
	}
}

// newRefreshTokenLocked returns an unused token shaped like GoTrue's
// legacy ones: 12 lower-case base32 characters
// (crypto.SecureAlphanumeric(12)). Called with s.mu held.
func (s *Server) newRefreshTokenLocked() (string, error) {
	for range 8 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("supabaseauth: random token: %w", err)
		}
		t := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:12]
		if _, taken := s.tokens[t]; !taken {
			return t, nil
		}
	}
	return "", errors.New("supabaseauth: could not draw an unused refresh token")
}

func amrMethod(rec *userRecord) string {
	if rec.anonymous {
		return "anonymous"
	}
	return "password"
}

// userJSON is GoTrue's models.User as it marshals it, freshly built so
// that callers may keep and change it.
func (rec *userRecord) userJSON() map[string]any {
	m := map[string]any{
		"id":            rec.id,
		"aud":           Audience,
		"role":          rec.role,
		"email":         rec.email,
		"phone":         rec.phone,
		"app_metadata":  cloneJSON(rec.appMeta),
		"user_metadata": cloneJSON(rec.userMeta),
		"identities":    []any{},
		"created_at":    timestamp(rec.created),
		"updated_at":    timestamp(rec.updated),
		"is_anonymous":  rec.anonymous,
	}
	if rec.email != "" && !rec.anonymous {
		// Users the emulator knows are confirmed: it sends no mail.
		m["email_confirmed_at"] = timestamp(rec.created)
		m["confirmed_at"] = timestamp(rec.created)
	}
	if !rec.lastSignIn.IsZero() {
		m["last_sign_in_at"] = timestamp(rec.lastSignIn)
	}
	return m
}

func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// normalizeJSON deep-copies m through JSON, so that stored metadata holds
// only JSON values (maps, slices, strings, float64, bools, nil) and shares
// nothing with the caller. nil becomes {}.
func normalizeJSON(m map[string]any) (map[string]any, error) {
	if m == nil {
		return map[string]any{}, nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// cloneJSON deep-copies a value made of JSON values.
func cloneJSON[T any](v T) T {
	c, _ := cloneValue(v).(T)
	return c
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = cloneValue(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = cloneValue(e)
		}
		return s
	default:
		return v
	}
}
