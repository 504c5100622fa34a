package supabaseauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// maxBody bounds a request body; GoTrue's grants are a few hundred bytes.
const maxBody = 1 << 20

// apiVersionHeader selects GoTrue's error format: from 2024-01-01 on
// (supabase-js sends it) errors are {"code": error_code, "message": ...}.
const apiVersionHeader = "X-Supabase-Api-Version"

var apiVersion20240101 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// bearerRegexp is GoTrue's.
var bearerRegexp = regexp.MustCompile(`^(?:B|b)earer (\S+$)`)

// apiError is GoTrue's HTTPError.
type apiError struct {
	status int
	code   string // error_code
	msg    string
}

func badRequest(code, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, msg: msg}
}

var (
	errRefreshNotFound = badRequest("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
	errRefreshReused   = badRequest("refresh_token_already_used", "Invalid Refresh Token: Already Used")
	errInvalidLogin    = badRequest("invalid_credentials", "Invalid login credentials")
)

// gateway is Supabase's API gateway in front of GoTrue: the project's key
// must come as the apikey header or query parameter. It answers refusals
// itself, in its own shape, and reports whether the request may go on.
func (s *Server) gateway(w http.ResponseWriter, r *http.Request) bool {
	if s.apiKey == "" {
		return true
	}
	key := r.Header.Get("apikey")
	if key == "" {
		key = r.URL.Query().Get("apikey")
	}
	// Compared as digests so that the time taken says nothing about the
	// key, not even its length.
	got, want := sha256.Sum256([]byte(key)), sha256.Sum256([]byte(s.apiKey))
	if key != "" && subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
		return true
	}
	s.mu.Lock()
	s.counts.BadAPIKey++
	s.mu.Unlock()
	type gatewayError struct {
		Message string `json:"message"`
		Hint    string `json:"hint"`
	}
	if key == "" {
		writeJSON(w, http.StatusUnauthorized, gatewayError{"No API key found in request", "No `apikey` request header or url param was found."})
	} else {
		writeJSON(w, http.StatusUnauthorized, gatewayError{"Invalid API key", "Double check your Supabase `anon` or `service_role` API key."})
	}
	return false
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	// grant_type is read from the query only: GoTrue's r.FormValue would
	// also read a form body, but its grants then parse the body as JSON.
	switch r.URL.Query().Get("grant_type") {
	case "refresh_token":
		s.refreshGrant(w, r)
	case "password":
		s.passwordGrant(w, r)
	default:
		// Sic: GoTrue answers an unknown grant with this code.
		writeError(w, r, badRequest("invalid_credentials", "unsupported_grant_type"))
	}
}

func (s *Server) refreshGrant(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts.RefreshRequests++
	s.mu.Unlock()
	var p struct {
		RefreshToken string `json:"refresh_token"`
	}
	if e := readParams(w, r, &p); e != nil {
		writeError(w, r, e)
		return
	}
	if p.RefreshToken == "" {
		writeOAuthError(w, "invalid_request", "refresh_token required")
		return
	}
	resp, e := s.refresh(p.RefreshToken)
	if e != nil {
		writeError(w, r, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// refresh is GoTrue's RefreshTokenGrant for v2 (counter) refresh tokens,
// done under one lock, which plays the part of GoTrue's row locks: the
// first of two concurrent uses of a token rotates it, the second sees a
// token one behind the session's and gets the rotated one.
func (s *Server) refresh(token string) (Session, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.tokens[token]
	if !ok {
		return Session{}, errRefreshNotFound
	}
	se := it.sess
	rec, ok := s.users[se.userID]
	if !ok {
		return Session{}, errRefreshNotFound
	}
	now := s.now()
	issued, rotate := se.active, false
	if behind := se.counter - it.counter; behind == 0 {
		var err error
		if issued, err = s.newRefreshTokenLocked(); err != nil {
			return Session{}, internalError(err)
		}
		rotate = true
	} else {
		// One behind: the client did not save the last answer. Within
		// the reuse interval of the session's last refresh: concurrent
		// refreshes (several tabs, several servers). Either way the
		// answer is the session's current token, not a new one, so all
		// the clients converge on it.
		failedToSave := behind == 1
		concurrent := absDuration(now.Sub(se.lastRefreshed())) < s.reuse
		if !failedToSave && !concurrent {
			// Anything else is a stolen or replayed token: the whole
			// session goes, so neither thief nor victim keeps it.
			s.logoutLocked(se)
			s.counts.ReusesRejected++
			return Session{}, errRefreshReused
		}
	}
	resp, err := s.sessionLocked(rec, se, issued, now)
	if err != nil {
		return Session{}, internalError(err)
	}
	if rotate {
		se.counter++
		se.active = issued
		se.issued = append(se.issued, issued)
		s.tokens[issued] = &issuedToken{sess: se, counter: se.counter}
	} else {
		s.counts.ReusesTolerated++
	}
	se.refreshed = now
	s.counts.Refreshes++
	return resp, nil
}

func (s *Server) passwordGrant(w http.ResponseWriter, r *http.Request) {
	var p struct {
		Email    string `json:"email"`
		Phone    string `json:"phone"`
		Password string `json:"password"`
	}
	if e := readParams(w, r, &p); e != nil {
		writeError(w, r, e)
		return
	}
	if p.Email != "" && p.Phone != "" {
		writeError(w, r, badRequest("validation_failed", "Only an email address or phone number should be provided on login."))
		return
	}
	if p.Email == "" && p.Phone == "" {
		writeError(w, r, badRequest("validation_failed", "missing email or phone"))
		return
	}
	resp, e := s.passwordSignIn(p.Email, p.Phone, p.Password)
	if e != nil {
		writeError(w, r, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) passwordSignIn(email, phone, password string) (Session, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var id string
	if email != "" {
		id = s.emails[strings.ToLower(email)]
	} else {
		id = s.phones[phone]
	}
	rec, ok := s.users[id]
	sum := sha256.Sum256([]byte(password))
	// An unknown user, a user without a password and a wrong password
	// are one answer, as in GoTrue.
	if !ok || !rec.hasPassword || subtle.ConstantTimeCompare(sum[:], rec.password[:]) != 1 {
		return Session{}, errInvalidLogin
	}
	resp, err := s.signInLocked(rec, s.now())
	if err != nil {
		return Session{}, internalError(err)
	}
	s.counts.PasswordSignIns++
	return resp, nil
}

// handleUser is GoTrue's requireAuthentication followed by UserGet.
func (s *Server) handleUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts.UserRequests++
	s.mu.Unlock()
	m := bearerRegexp.FindStringSubmatch(r.Header.Get("Authorization"))
	if len(m) != 2 {
		writeError(w, r, &apiError{status: http.StatusUnauthorized, code: "no_authorization", msg: "This endpoint requires a Bearer token"})
		return
	}
	user, e := s.userForToken(m[1])
	if e != nil {
		writeError(w, r, e)
		return
	}
	writeJSON(w, http.StatusOK, user)
}

func (s *Server) userForToken(raw string) (map[string]any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	claims := jwt.MapClaims{}
	// As GoTrue: HS256 and the published keys' algorithm; exp and nbf are
	// checked (on the Server's clock), aud and iss are not here.
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256", "ES256"}), jwt.WithTimeFunc(s.now))
	_, err := parser.ParseWithClaims(raw, claims, s.verificationKeyLocked)
	if err != nil {
		return nil, &apiError{status: http.StatusForbidden, code: "bad_jwt", msg: "invalid JWT: unable to parse or verify signature, " + err.Error()}
	}
	sub, err := claims.GetSubject()
	if err != nil {
		return nil, &apiError{status: http.StatusForbidden, code: "bad_jwt", msg: "invalid JWT: unable to parse or verify signature, " + err.Error()}
	}
	if sub == "" {
		return nil, &apiError{status: http.StatusForbidden, code: "bad_jwt", msg: "invalid claim: missing sub claim"}
	}
	id, err := uuid.Parse(sub)
	if err != nil {
		return nil, badRequest("bad_jwt", "invalid claim: sub claim must be a UUID")
	}
	rec, ok := s.users[id.String()]
	if !ok {
		return nil, &apiError{status: http.StatusForbidden, code: "user_not_found", msg: "User from sub claim in JWT does not exist"}
	}
	if sid, _ := claims["session_id"].(string); sid != "" && sid != uuid.Nil.String() {
		parsed, err := uuid.Parse(sid)
		if err != nil {
			return nil, &apiError{status: http.StatusForbidden, code: "bad_jwt", msg: "invalid claim: session_id claim must be a UUID"}
		}
		if _, ok := s.sessions[parsed.String()]; !ok {
			// A session ended by reuse detection takes its access
			// tokens with it, here as in GoTrue.
			return nil, &apiError{status: http.StatusForbidden, code: "session_not_found", msg: "Session from session_id claim in JWT does not exist"}
		}
	}
	if aud, _ := claims.GetAudience(); len(aud) == 0 || aud[0] != Audience {
		return nil, badRequest("validation_failed", "Token audience doesn't match request audience")
	}
	return rec.userJSON(), nil
}

// verificationKeyLocked is GoTrue's key lookup: a kid names a published
// key; an HS256 token without a kid, or with one GoTrue does not know
// (supabase/auth#2072: apps put their own kids in tokens they sign with the
// secret), is checked with the secret. Called with s.mu held.
func (s *Server) verificationKeyLocked(t *jwt.Token) (any, error) {
	hs256 := t.Method.Alg() == jwt.SigningMethodHS256.Alg() && len(s.secret) > 0
	if kid, ok := t.Header["kid"].(string); ok {
		if k, found := s.keys[kid]; found && k.published {
			return &k.priv.PublicKey, nil
		}
		if !hs256 {
			return nil, fmt.Errorf("invalid kid: %s", kid)
		}
	}
	if hs256 {
		return s.secret, nil
	}
	return nil, errors.New("missing kid")
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts.JWKSFetches++
	fault := s.jwksFault
	body := s.jwksLocked()
	s.mu.Unlock()
	if fault != 0 {
		writeJSON(w, fault, map[string]string{"message": http.StatusText(fault)})
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=600")
	writeJSON(w, http.StatusOK, body)
}

// readParams is GoTrue's retrieveRequestParams: the body is JSON.
func readParams(w http.ResponseWriter, r *http.Request, dst any) *apiError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil {
		err = json.Unmarshal(body, dst)
	}
	if err != nil {
		return badRequest("bad_json", "Could not parse request body as JSON: "+err.Error())
	}
	return nil
}

func internalError(err error) *apiError {
	return &apiError{status: http.StatusInternalServerError, code: "unexpected_failure", msg: "supabaseauth: " + err.Error()}
}

// writeError answers e as GoTrue's HandleResponseError does: the legacy
// {"code": status, "error_code", "msg"} unless the client asked for API
// version 2024-01-01 or later.
func writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	w.Header().Set("X-Sb-Error-Code", e.code)
	if wantsVersion20240101(r.Header.Get(apiVersionHeader)) {
		w.Header().Set(apiVersionHeader, "2024-01-01")
		writeJSON(w, e.status, struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{e.code, e.msg})
		return
	}
	writeJSON(w, e.status, struct {
		Code      int    `json:"code"`
		ErrorCode string `json:"error_code,omitempty"`
		Msg       string `json:"msg"`
	}{e.status, e.code, e.msg})
}

// writeOAuthError is GoTrue's OAuthError, always answered 400.
func writeOAuthError(w http.ResponseWriter, code, description string) {
	writeJSON(w, http.StatusBadRequest, struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{code, description})
}

// wantsVersion20240101 is GoTrue's DetermineClosestAPIVersion reduced to
// the one version it knows: a malformed or earlier date is the initial
// version.
func wantsVersion20240101(v string) bool {
	if v == "" {
		return false
	}
	t, err := time.Parse("2006-01-02", v)
	return err == nil && !t.Before(apiVersion20240101)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"message":"supabaseauth: encoding the answer failed"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
