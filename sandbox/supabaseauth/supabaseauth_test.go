package supabaseauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

const (
	testSecret = "super-secret-jwt-token-with-at-least-32-characters-long"
	testAPIKey = "sb_publishable_test_key"
)

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a Server behind a real HTTP server.
type env struct {
	t     *testing.T
	srv   *Server
	ts    *httptest.Server
	clock *clock
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	c := newClock()
	cfg.Now = c.Now
	srv := New(cfg)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &env{t: t, srv: srv, ts: ts, clock: c}
}

// answer is an HTTP answer with its body decoded as a JSON object.
type answer struct {
	status int
	header http.Header
	raw    string
	json   map[string]any
}

func (e *env) do(method, path, body string, header map[string]string) answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.json)
	return a
}

// refresh presents token as credgate's refresher does.
func (e *env) refresh(token string) answer {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"refresh_token": token})
	return e.do(http.MethodPost, TokenPath+"?grant_type=refresh_token", string(body), map[string]string{"apikey": testAPIKey})
}

func (e *env) user(accessToken string) answer {
	e.t.Helper()
	return e.do(http.MethodGet, UserPath, "", map[string]string{"apikey": testAPIKey, "Authorization": "Bearer " + accessToken})
}

func (e *env) jwks() answer {
	e.t.Helper()
	return e.do(http.MethodGet, JWKSPath, "", nil)
}

func (e *env) signIn(u User) Session {
	e.t.Helper()
	s, err := e.srv.SignIn(u)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func wantJSON(t *testing.T, a answer, status int, want string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.raw)
	}
	var got, exp any
	if err := json.Unmarshal([]byte(a.raw), &got); err != nil {
		t.Fatalf("body %q is not JSON: %v", a.raw, err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(exp)
	if !bytes.Equal(g, w) {
		t.Fatalf("body %s, want %s", g, w)
	}
}

var alice = User{ID: "5f1a0001-7c2b-4d3e-8f40-000000000001", Email: "alice@example.com", UserMetadata: map[string]any{"full_name": "Alice"}}

func TestRefreshRotates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})
	first := e.signIn(alice)
	// The caller owns what it is given.
	first.User["app_metadata"].(map[string]any)["provider"] = "tampered"

	a := e.refresh(first.RefreshToken)
	if a.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", a.status, a.raw)
	}
	child := str(a.json, "refresh_token")
	if child == first.RefreshToken || len(child) != 12 {
		t.Fatalf("refresh_token %q: want a new 12-character token", child)
	}
	if str(a.json, "token_type") != "bearer" || a.json["expires_in"] != 3600.0 ||
		a.json["expires_at"] != float64(e.clock.Now().Add(time.Hour).Unix()) || str(a.json, "access_token") == "" {
		t.Fatalf("session %s: not GoTrue's shape", a.raw)
	}
	u, _ := a.json["user"].(map[string]any)
	for _, k := range []string{"id", "aud", "role", "email", "phone", "app_metadata", "user_metadata", "identities", "created_at", "updated_at", "is_anonymous"} {
		if _, ok := u[k]; !ok {
			t.Errorf("user lacks %q: %v", k, u)
		}
	}
	if str(u, "id") != alice.ID || str(u, "aud") != "authenticated" || str(u, "role") != "authenticated" ||
		str(u, "phone") != "" || u["is_anonymous"] != false {
		t.Errorf("user %v", u)
	}
	if app, _ := u["app_metadata"].(map[string]any); str(app, "provider") != "email" {
		t.Errorf("app_metadata %v: the caller's change leaked into the server", app)
	}
	if meta, _ := u["user_metadata"].(map[string]any); str(meta, "full_name") != "Alice" {
		t.Errorf("user_metadata %v", meta)
	}

	// The child rotates in turn.
	b := e.refresh(child)
	if b.status != http.StatusOK || str(b.json, "refresh_token") == child || str(b.json, "refresh_token") == first.RefreshToken {
		t.Fatalf("second refresh: %d %s", b.status, b.raw)
	}
	if c := e.srv.Counts(); c.Refreshes != 2 || c.RefreshRequests != 2 || c.ReusesTolerated != 0 || c.ReusesRejected != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestRefreshReuse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		rotations int           // refreshes done down the chain before the replay
		replay    int           // which token is replayed: 0 is the sign-in token
		wait      time.Duration // time between the last refresh and the replay
		tolerated bool
	}{
		{"parent within the interval", 1, 0, 0, true},
		{"parent after the interval: the client failed to save the answer", 1, 0, time.Hour, true},
		{"grandparent within the interval: concurrent refreshes", 2, 0, 9 * time.Second, true},
		{"grandparent at the interval", 2, 0, 10 * time.Second, false},
		{"grandparent after the interval", 2, 0, 11 * time.Second, false},
		{"older token after the interval", 4, 1, time.Minute, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})
			s := e.signIn(alice)
			chain, access := []string{s.RefreshToken}, s.AccessToken
			for range tc.rotations {
				a := e.refresh(chain[len(chain)-1])
				if a.status != http.StatusOK {
					t.Fatalf("rotation: %d %s", a.status, a.raw)
				}
				chain, access = append(chain, str(a.json, "refresh_token")), str(a.json, "access_token")
			}
			active := chain[len(chain)-1]
			e.clock.Advance(tc.wait)

			a := e.refresh(chain[tc.replay])
			c := e.srv.Counts()
			if tc.tolerated {
				if a.status != http.StatusOK {
					t.Fatalf("replay: %d %s, want 200", a.status, a.raw)
				}
				if got := str(a.json, "refresh_token"); got != active {
					t.Fatalf("replay answered refresh token %q, want the active %q", got, active)
				}
				if u := e.user(str(a.json, "access_token")); u.status != http.StatusOK {
					t.Fatalf("replay's access token: %d %s", u.status, u.raw)
				}
				if c.ReusesTolerated != 1 || c.ReusesRejected != 0 {
					t.Fatalf("counts %+v", c)
				}
				// The session lives on: the active token still rotates.
				if b := e.refresh(active); b.status != http.StatusOK || str(b.json, "refresh_token") == active {
					t.Fatalf("active after a tolerated reuse: %d %s", b.status, b.raw)
				}
				return
			}
			wantJSON(t, a, http.StatusBadRequest, `{"code":400,"error_code":"refresh_token_already_used","msg":"Invalid Refresh Token: Already Used"}`)
			if a.header.Get("X-Sb-Error-Code") != "refresh_token_already_used" {
				t.Errorf("x-sb-error-code %q", a.header.Get("X-Sb-Error-Code"))
			}
			if c.ReusesRejected != 1 || c.ReusesTolerated != 0 {
				t.Fatalf("counts %+v", c)
			}
			// The whole session is gone: its active refresh token and
			// its access tokens stop working too.
			wantJSON(t, e.refresh(active), http.StatusBadRequest,
				`{"code":400,"error_code":"refresh_token_not_found","msg":"Invalid Refresh Token: Refresh Token Not Found"}`)
			wantJSON(t, e.user(access), http.StatusForbidden,
				`{"code":403,"error_code":"session_not_found","msg":"Session from session_id claim in JWT does not exist"}`)
			// Other sessions of the user are untouched.
			other := e.signIn(alice)
			if b := e.refresh(other.RefreshToken); b.status != http.StatusOK {
				t.Fatalf("another session: %d %s", b.status, b.raw)
			}
		})
	}
}

func TestReuseIntervalConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		interval  time.Duration
		wait      time.Duration
		tolerated bool
	}{
		{"zero is the 10 s default", 0, 9 * time.Second, true},
		{"longer interval", time.Minute, 50 * time.Second, true},
		{"negative is none", -1, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Config{JWTSecret: []byte(testSecret), ReuseInterval: tc.interval})
			t0 := e.signIn(alice).RefreshToken
			t1 := str(e.refresh(t0).json, "refresh_token")
			e.refresh(t1)
			e.clock.Advance(tc.wait)
			a := e.refresh(t0) // two behind: only the interval tolerates it
			if got := a.status == http.StatusOK; got != tc.tolerated {
				t.Fatalf("status %d %s, tolerated %v", a.status, a.raw, tc.tolerated)
			}
		})
	}
}

func TestConcurrentRefreshConverges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})
	token := e.signIn(alice).RefreshToken
	const n = 16
	got := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i] = e.refresh(token) })
	}
	wg.Wait()
	for i, a := range got {
		if a.status != http.StatusOK || str(a.json, "refresh_token") != str(got[0].json, "refresh_token") {
			t.Fatalf("request %d: %d %s; want 200 and the same child as request 0 (%s)", i, a.status, a.raw, got[0].raw)
		}
	}
	if c := e.srv.Counts(); c.Refreshes != n || c.ReusesTolerated != n-1 {
		t.Fatalf("counts %+v", c)
	}
}

func TestRefreshRefusals(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, query, body string
		header            map[string]string
		status            int
		want              string
		wantHeader        string // X-Supabase-Api-Version echoed
	}{
		{name: "unknown token", query: "refresh_token", body: `{"refresh_token":"abcdefghijkl"}`, status: 400,
			want: `{"code":400,"error_code":"refresh_token_not_found","msg":"Invalid Refresh Token: Refresh Token Not Found"}`},
		{name: "unknown token, API version 2024-01-01", query: "refresh_token", body: `{"refresh_token":"abcdefghijkl"}`,
			header: map[string]string{"X-Supabase-Api-Version": "2024-01-01"}, status: 400,
			want: `{"code":"refresh_token_not_found","message":"Invalid Refresh Token: Refresh Token Not Found"}`, wantHeader: "2024-01-01"},
		{name: "unknown token, malformed API version", query: "refresh_token", body: `{"refresh_token":"abcdefghijkl"}`,
			header: map[string]string{"X-Supabase-Api-Version": "yesterday"}, status: 400,
			want: `{"code":400,"error_code":"refresh_token_not_found","msg":"Invalid Refresh Token: Refresh Token Not Found"}`},
		{name: "no refresh token", query: "refresh_token", body: `{}`, status: 400,
			want: `{"error":"invalid_request","error_description":"refresh_token required"}`},
		{name: "not JSON", query: "refresh_token", body: `refresh_token=x`, status: 400,
			want: `{"code":400,"error_code":"bad_json","msg":"Could not parse request body as JSON: invalid character 'r' looking for beginning of value"}`},
		{name: "refresh token not a string", query: "refresh_token", body: `{"refresh_token":42}`, status: 400,
			want: `{"code":400,"error_code":"bad_json","msg":"Could not parse request body as JSON: json: cannot unmarshal number into Go struct field .refresh_token of type string"}`},
		{name: "unsupported grant", query: "client_credentials", body: `{}`, status: 400,
			want: `{"code":400,"error_code":"invalid_credentials","msg":"unsupported_grant_type"}`},
	}
	e := newEnv(t, Config{JWTSecret: []byte(testSecret)})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(http.MethodPost, TokenPath+"?grant_type="+tc.query, tc.body, tc.header)
			if tc.name == "refresh token not a string" {
				// encoding/json's wording of type errors is not ours to pin.
				if a.status != tc.status || str(a.json, "error_code") != "bad_json" {
					t.Fatalf("%d %s", a.status, a.raw)
				}
				return
			}
			wantJSON(t, a, tc.status, tc.want)
			if got := a.header.Get("X-Supabase-Api-Version"); got != tc.wantHeader {
				t.Errorf("X-Supabase-Api-Version %q, want %q", got, tc.wantHeader)
			}
		})
	}
	if c := e.srv.Counts(); c.Refreshes != 0 || c.RefreshRequests != 6 {
		t.Fatalf("counts %+v", c)
	}
}

func TestAPIKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})
	cases := []struct {
		name, path string
		header     map[string]string
		status     int
		want       string
	}{
		{name: "no key", path: TokenPath + "?grant_type=refresh_token", status: 401,
			want: `{"message":"No API key found in request","hint":"No ` + "`apikey`" + ` request header or url param was found."}`},
		{name: "wrong key", path: TokenPath + "?grant_type=refresh_token", header: map[string]string{"apikey": "sb_publishable_other"}, status: 401,
			want: `{"message":"Invalid API key","hint":"Double check your Supabase ` + "`anon`" + ` or ` + "`service_role`" + ` API key."}`},
		{name: "key as a bearer token only", path: TokenPath + "?grant_type=refresh_token", header: map[string]string{"Authorization": "Bearer " + testAPIKey}, status: 401},
		{name: "key in the header", path: TokenPath + "?grant_type=refresh_token", header: map[string]string{"apikey": testAPIKey}, status: 200},
		{name: "key in the query", path: TokenPath + "?grant_type=refresh_token&apikey=" + testAPIKey, status: 200},
		{name: "user endpoint without key", path: UserPath, status: 401},
		{name: "JWKS is open", path: JWKSPath, status: 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method, body := http.MethodPost, ""
			if tc.path == UserPath || tc.path == JWKSPath {
				method = http.MethodGet
			} else {
				b, _ := json.Marshal(map[string]string{"refresh_token": e.signIn(alice).RefreshToken})
				body = string(b)
			}
			a := e.do(method, tc.path, body, tc.header)
			if tc.want != "" {
				wantJSON(t, a, tc.status, tc.want)
			} else if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.raw)
			}
		})
	}
	if c := e.srv.Counts(); c.BadAPIKey != 4 || c.Refreshes != 2 {
		t.Fatalf("counts %+v", c)
	}
}

// jwksKey fetches the served JWKS and returns the key kid, parsed and
// validated by jwkset (what keyfunc, and so credgate, uses).
func (e *env) jwksKey(kid string) (*ecdsa.PublicKey, bool) {
	e.t.Helper()
	a := e.jwks()
	if a.status != http.StatusOK {
		e.t.Fatalf("jwks: %d %s", a.status, a.raw)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal([]byte(a.raw), &set); err != nil {
		e.t.Fatal(err)
	}
	keys, err := set.JWKSlice()
	if err != nil {
		e.t.Fatalf("jwkset refuses the JWKS %s: %v", a.raw, err)
	}
	for _, k := range keys {
		if k.Marshal().KID == kid {
			pub, ok := k.Key().(*ecdsa.PublicKey)
			return pub, ok
		}
	}
	return nil, false
}

func headerOf(t *testing.T, token string) map[string]any {
	t.Helper()
	h := map[string]any{}
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil || json.Unmarshal(raw, &h) != nil {
		t.Fatalf("token %q: bad header", token)
	}
	return h
}

func TestJWKSRotationAndFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})

	// An HS256-only project publishes no key, and never its secret.
	a := e.jwks()
	wantJSON(t, a, http.StatusOK, `{"keys":[]}`)
	if a.header.Get("Cache-Control") != "public, max-age=600" || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers %v", a.header)
	}

	kid1, err := e.srv.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	if e.srv.SigningKID() != kid1 {
		t.Fatalf("signer %q, want %q", e.srv.SigningKID(), kid1)
	}
	a = e.jwks()
	keys, _ := a.json["keys"].([]any)
	if len(keys) != 1 {
		t.Fatalf("jwks %s", a.raw)
	}
	k, _ := keys[0].(map[string]any)
	if str(k, "kty") != "EC" || str(k, "crv") != "P-256" || str(k, "alg") != "ES256" || str(k, "use") != "sig" ||
		str(k, "kid") != kid1 || len(str(k, "x")) != 43 || len(str(k, "y")) != 43 || k["d"] != nil {
		t.Fatalf("jwk %v", k)
	}
	if ops, _ := k["key_ops"].([]any); len(ops) != 1 || ops[0] != "verify" {
		t.Fatalf("key_ops %v", k["key_ops"])
	}
	old := e.signIn(alice).AccessToken
	if h := headerOf(t, old); h["alg"] != "ES256" || h["kid"] != kid1 {
		t.Fatalf("header %v", h)
	}

	kid2, err := e.srv.RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.jwksKey(kid1); !ok {
		t.Fatal("the old key left the JWKS on rotation")
	}
	if _, ok := e.jwksKey(kid2); !ok {
		t.Fatal("the new key is not in the JWKS")
	}
	fresh := e.signIn(alice).AccessToken
	if h := headerOf(t, fresh); h["kid"] != kid2 {
		t.Fatalf("header %v, want kid %s", h, kid2)
	}
	if u := e.user(old); u.status != http.StatusOK {
		t.Fatalf("token of the old, still published key: %d %s", u.status, u.raw)
	}

	e.srv.RetireKey(kid1)
	if _, ok := e.jwksKey(kid1); ok {
		t.Fatal("a retired key is still published")
	}
	if u := e.user(old); u.status != http.StatusForbidden || str(u.json, "error_code") != "bad_jwt" {
		t.Fatalf("token of a retired key: %d %s", u.status, u.raw)
	}
	if u := e.user(fresh); u.status != http.StatusOK {
		t.Fatalf("token of the current key: %d %s", u.status, u.raw)
	}

	if err := e.srv.SignWithSecret(); err != nil {
		t.Fatal(err)
	}
	if h := headerOf(t, e.signIn(alice).AccessToken); h["alg"] != "HS256" || h["kid"] != nil {
		t.Fatalf("header %v after SignWithSecret", h)
	}

	for _, status := range []int{http.StatusServiceUnavailable, http.StatusNotFound, http.StatusInternalServerError} {
		if err := e.srv.SetJWKSFault(status); err != nil {
			t.Fatal(err)
		}
		if a := e.jwks(); a.status != status {
			t.Fatalf("faulted JWKS: %d, want %d", a.status, status)
		}
	}
	if err := e.srv.SetJWKSFault(0); err != nil {
		t.Fatal(err)
	}
	if a := e.jwks(); a.status != http.StatusOK {
		t.Fatalf("healed JWKS: %d %s", a.status, a.raw)
	}
	if c := e.srv.Counts(); c.JWKSFetches != 9 {
		t.Fatalf("JWKSFetches %d, want 9", c.JWKSFetches)
	}
}

func TestAccessTokensVerify(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  Config
		alg  string
	}{
		{"HS256 with the legacy secret", Config{JWTSecret: []byte(testSecret)}, "HS256"},
		{"ES256 with the key from the JWKS", Config{Issuer: "https://qwertyuiopasdfghjklz.supabase.co/auth/v1"}, "ES256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.cfg)
			issuer := tc.cfg.Issuer
			if issuer == "" {
				issuer = DefaultIssuer
			}
			s := e.signIn(alice)
			keyFunc := func(tok *jwt.Token) (any, error) {
				if tc.alg == "HS256" {
					return []byte(testSecret), nil
				}
				kid, _ := tok.Header["kid"].(string)
				if pub, ok := e.jwksKey(kid); ok {
					return pub, nil
				}
				return nil, errors.New("kid not in the JWKS")
			}
			claims := jwt.MapClaims{}
			_, err := jwt.NewParser(jwt.WithValidMethods([]string{tc.alg}), jwt.WithAudience("authenticated"),
				jwt.WithIssuer(issuer), jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(e.clock.Now),
			).ParseWithClaims(s.AccessToken, claims, keyFunc)
			if err != nil {
				t.Fatalf("golang-jwt refuses the access token: %v", err)
			}
			if claims["sub"] != alice.ID || claims["email"] != alice.Email || claims["phone"] != "" ||
				claims["role"] != "authenticated" || claims["aal"] != "aal1" || claims["is_anonymous"] != false {
				t.Fatalf("claims %v", claims)
			}
			if sid, _ := claims["session_id"].(string); uuid.Validate(sid) != nil {
				t.Fatalf("session_id %v", claims["session_id"])
			}
			if claims["exp"] != float64(e.clock.Now().Add(time.Hour).Unix()) || claims["iat"] != float64(e.clock.Now().Unix()) {
				t.Fatalf("exp %v iat %v", claims["exp"], claims["iat"])
			}
			amr, _ := claims["amr"].([]any)
			if len(amr) != 1 || str(amr[0].(map[string]any), "method") != "password" {
				t.Fatalf("amr %v", claims["amr"])
			}
			if app, _ := claims["app_metadata"].(map[string]any); str(app, "provider") != "email" {
				t.Fatalf("app_metadata %v", claims["app_metadata"])
			}
			if meta, _ := claims["user_metadata"].(map[string]any); str(meta, "full_name") != "Alice" {
				t.Fatalf("user_metadata %v", claims["user_metadata"])
			}
			// GoTrue serializes aud as a string, not an array.
			payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(s.AccessToken, ".")[1])
			if !strings.Contains(string(payload), `"aud":"authenticated"`) {
				t.Fatalf("payload %s: aud is not a single string", payload)
			}
		})
	}
}

func TestAnonymousUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret)})
	s := e.signIn(User{Anonymous: true})
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(s.AccessToken, claims); err != nil {
		t.Fatal(err)
	}
	amr, _ := claims["amr"].([]any)
	if claims["is_anonymous"] != true || claims["role"] != "authenticated" || claims["email"] != "" ||
		len(amr) != 1 || str(amr[0].(map[string]any), "method") != "anonymous" {
		t.Fatalf("claims %v", claims)
	}
	if s.User["is_anonymous"] != true {
		t.Fatalf("user %v", s.User)
	}
}

func TestPasswordGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})
	if err := e.srv.AddUser(alice, "correct horse"); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.AddUser(User{Phone: "15551234567"}, "by phone"); err != nil {
		t.Fatal(err)
	}
	invalid := `{"code":400,"error_code":"invalid_credentials","msg":"Invalid login credentials"}`
	cases := []struct {
		name, body string
		status     int
		want       string
	}{
		{name: "right password", body: `{"email":"alice@example.com","password":"correct horse"}`, status: 200},
		{name: "email in another case", body: `{"email":"Alice@Example.COM","password":"correct horse"}`, status: 200},
		{name: "by phone", body: `{"phone":"15551234567","password":"by phone"}`, status: 200},
		{name: "wrong password", body: `{"email":"alice@example.com","password":"battery staple"}`, status: 400, want: invalid},
		{name: "unknown email", body: `{"email":"bob@example.com","password":"correct horse"}`, status: 400, want: invalid},
		{name: "no email or phone", body: `{"password":"correct horse"}`, status: 400,
			want: `{"code":400,"error_code":"validation_failed","msg":"missing email or phone"}`},
		{name: "email and phone", body: `{"email":"alice@example.com","phone":"15551234567","password":"x"}`, status: 400,
			want: `{"code":400,"error_code":"validation_failed","msg":"Only an email address or phone number should be provided on login."}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do(http.MethodPost, TokenPath+"?grant_type=password", tc.body, map[string]string{"apikey": testAPIKey})
			if tc.want != "" {
				wantJSON(t, a, tc.status, tc.want)
				return
			}
			if a.status != tc.status {
				t.Fatalf("%d %s", a.status, a.raw)
			}
			u, _ := a.json["user"].(map[string]any)
			if str(u, "last_sign_in_at") == "" {
				t.Errorf("user %v lacks last_sign_in_at", u)
			}
			// A password session is a refresh-token family like any other.
			if r := e.refresh(str(a.json, "refresh_token")); r.status != http.StatusOK {
				t.Fatalf("refreshing a password session: %d %s", r.status, r.raw)
			}
			if g := e.user(str(a.json, "access_token")); g.status != http.StatusOK || str(g.json, "id") != str(u, "id") {
				t.Fatalf("GET /user: %d %s", g.status, g.raw)
			}
		})
	}
	if c := e.srv.Counts(); c.PasswordSignIns != 3 {
		t.Fatalf("counts %+v", c)
	}
}

func TestUserEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})
	if _, err := e.srv.RotateKey(); err != nil {
		t.Fatal(err)
	}
	foreign, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	token := func(opts ...TokenOption) string {
		tok, err := e.srv.Token(alice, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cases := []struct {
		name   string
		auth   string
		status int
		code   string
	}{
		{"ES256 token", "Bearer " + token(), 200, ""},
		{"HS256 token while signing ES256", "Bearer " + token(WithSecret()), 200, ""},
		{"HS256 with a kid nobody publishes", "Bearer " + token(WithSecret(), WithHeader("kid", "app-own-kid")), 200, ""},
		{"lower-case bearer", "bearer " + token(), 200, ""},
		{"role anon is not GoTrue's concern", "Bearer " + token(WithClaim("role", "anon")), 200, ""},
		{"no Authorization", "", 401, "no_authorization"},
		{"not a bearer", "Basic " + token(), 401, "no_authorization"},
		{"expired", "Bearer " + token(WithExpiresAt(e.clock.Now().Add(-time.Minute))), 403, "bad_jwt"},
		{"wrong audience", "Bearer " + token(WithClaim("aud", "someone-else")), 400, "validation_failed"},
		{"key nobody publishes", "Bearer " + token(WithSigner(jwt.SigningMethodES256, foreign, "not-published")), 403, "bad_jwt"},
		{"no kid on ES256", "Bearer " + token(WithHeader("kid", nil)), 403, "bad_jwt"},
		{"wrong secret", "Bearer " + token(WithSigner(jwt.SigningMethodHS256, []byte("wrong-secret"), "")), 403, "bad_jwt"},
		{"alg none", "Bearer " + token(WithSigner(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "")), 403, "bad_jwt"},
		{"anon key shape: no sub", "Bearer " + token(WithoutClaim("sub"), WithClaim("role", "anon")), 403, "bad_jwt"},
		{"sub not a UUID", "Bearer " + token(WithClaim("sub", "alice")), 400, "bad_jwt"},
		{"unknown user", "Bearer " + token(WithClaim("sub", uuid.NewString())), 403, "user_not_found"},
		{"unknown session", "Bearer " + token(WithClaim("session_id", uuid.NewString())), 403, "session_not_found"},
		{"garbage", "Bearer not.a.jwt", 403, "bad_jwt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			header := map[string]string{"apikey": testAPIKey}
			if tc.auth != "" {
				header["Authorization"] = tc.auth
			}
			a := e.do(http.MethodGet, UserPath, "", header)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.raw)
			}
			if tc.status == http.StatusOK {
				if str(a.json, "id") != alice.ID || str(a.json, "email") != alice.Email || str(a.json, "aud") != "authenticated" {
					t.Fatalf("user %s", a.raw)
				}
				return
			}
			if got := str(a.json, "error_code"); got != tc.code || a.json["code"] != float64(tc.status) || str(a.json, "msg") == "" {
				t.Fatalf("body %s, want error_code %s", a.raw, tc.code)
			}
		})
	}
}

func TestAdoptRefreshToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{JWTSecret: []byte(testSecret), APIKey: testAPIKey})
	// As credgate's cookie fixtures (identity/testdata/supabase) carry
	// them.
	const fixture, sessionID = "rtsingle0001", "5e550001-2a3b-4c5d-9e6f-000000000001"
	if err := e.srv.AdoptSession(sessionID, fixture, alice); err != nil {
		t.Fatal(err)
	}
	a := e.refresh(fixture)
	if a.status != http.StatusOK || str(a.json, "refresh_token") == fixture {
		t.Fatalf("adopted token: %d %s", a.status, a.raw)
	}
	if u, _ := a.json["user"].(map[string]any); str(u, "id") != alice.ID {
		t.Fatalf("user %v", u)
	}
	// An access token made elsewhere for that session passes GET /user.
	tok, err := e.srv.Token(alice, WithClaim("session_id", sessionID))
	if err != nil {
		t.Fatal(err)
	}
	if u := e.user(tok); u.status != http.StatusOK {
		t.Fatalf("fixture session's access token: %d %s", u.status, u.raw)
	}
	// Adopting again makes the (now used) token unused again.
	if err := e.srv.AdoptRefreshToken(fixture, alice); err != nil {
		t.Fatal(err)
	}
	b := e.refresh(fixture)
	if b.status != http.StatusOK || str(b.json, "refresh_token") == str(a.json, "refresh_token") {
		t.Fatalf("re-adopted token: %d %s", b.status, b.raw)
	}
	// The first adoption's session went with it.
	if r := e.refresh(str(a.json, "refresh_token")); r.status != http.StatusBadRequest {
		t.Fatalf("old session's token: %d %s", r.status, r.raw)
	}
}

func TestKeyfuncFollowsRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	kid1 := e.srv.SigningKID()
	if kid1 == "" {
		t.Fatal("a server without a secret has no key")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kf, err := keyfunc.NewDefaultCtx(ctx, []string{e.ts.URL + JWKSPath})
	if err != nil {
		t.Fatal(err)
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"ES256"}), jwt.WithTimeFunc(e.clock.Now))
	if _, err := parser.Parse(e.signIn(alice).AccessToken, kf.Keyfunc); err != nil {
		t.Fatalf("first key: %v", err)
	}
	if _, err := e.srv.RotateKey(); err != nil {
		t.Fatal(err)
	}
	// keyfunc refetches the JWKS for a kid it does not know.
	if _, err := parser.Parse(e.signIn(alice).AccessToken, kf.Keyfunc); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if c := e.srv.Counts(); c.JWKSFetches < 2 {
		t.Fatalf("JWKSFetches %d, want a refetch", c.JWKSFetches)
	}
}

func TestFixtureKey(t *testing.T) {
	t.Parallel()
	// The ES256 key of credgate's fixtures (identity/testdata/supabase/keys.json).
	d, err := base64.RawURLEncoding.DecodeString("LgqbTVoQNN5x0GwIqMCpYwlbjDfEufhKQolc-yDFSbU")
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{JWTSecret: []byte(testSecret)})
	if err := e.srv.AddSigningKey("fixture-es256-1", key); err != nil {
		t.Fatal(err)
	}
	a := e.jwks()
	keys, _ := a.json["keys"].([]any)
	if len(keys) != 1 {
		t.Fatalf("jwks %s", a.raw)
	}
	k, _ := keys[0].(map[string]any)
	if str(k, "x") != "8owMOJHavLxBcYZyaPm-mIdlNclawtIkiLaLL1qgGbI" || str(k, "y") != "ZvBPAB02O9WDze1ZwAOBF2VBcvBI1nZolJtwY7-SfZY" {
		t.Fatalf("jwk %v does not match the fixture's public key", k)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mismatched := *p256
	mismatched.PublicKey = p384.PublicKey
	mismatched.PublicKey.Curve = elliptic.P256()
	srv := New(Config{})
	secretless := New(Config{})
	cases := []struct {
		name string
		err  error
	}{
		{"empty kid", srv.AddSigningKey("", p256)},
		{"nil key", srv.AddSigningKey("k", nil)},
		{"P-384 key", srv.AddSigningKey("k", p384)},
		{"key without a curve", srv.AddSigningKey("k", &ecdsa.PrivateKey{})},
		{"key without coordinates", srv.AddSigningKey("k", &ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: elliptic.P256()}})},
		{"public key of another private key", srv.AddSigningKey("k", &mismatched)},
		{"JWKS fault 42", srv.SetJWKSFault(42)},
		{"JWKS fault 200", srv.SetJWKSFault(200)},
		{"SignWithSecret without a secret", secretless.SignWithSecret()},
		{"empty refresh token", srv.AdoptRefreshToken("", alice)},
		{"session id not a UUID", srv.AdoptSession("s1", "abcdefghijkl", alice)},
		{"AddUser without email or phone", srv.AddUser(User{}, "pw")},
	}
	_, errSignIn := srv.SignIn(User{ID: "not-a-uuid"})
	_, errMeta := srv.SignIn(User{UserMetadata: map[string]any{"f": func() {}}})
	_, errApp := srv.SignIn(User{AppMetadata: map[string]any{"c": make(chan int)}})
	_, errKid := srv.Token(alice, WithKey("missing"))
	_, errSecret := secretless.Token(alice, WithSecret())
	_, errCurve := srv.Token(alice, WithSigner(jwt.SigningMethodES256, &ecdsa.PrivateKey{}, ""))
	_, errType := srv.Token(alice, WithSigner(jwt.SigningMethodHS256, 42, ""))
	_, errMethod := srv.Token(alice, WithSigner(nil, nil, ""))
	_, errClaim := srv.Token(alice, WithClaim("x", func() {}))
	if _, err := srv.SignIn(User{Email: "carol@example.com"}); err != nil {
		t.Fatal(err)
	}
	_, errEmail := srv.SignIn(User{ID: uuid.NewString(), Email: "CAROL@example.com"})
	cases = append(cases, []struct {
		name string
		err  error
	}{
		{"user id not a UUID", errSignIn},
		{"metadata that is not JSON", errMeta},
		{"app metadata that is not JSON", errApp},
		{"unknown kid", errKid},
		{"WithSecret without a secret", errSecret},
		{"foreign key without a curve", errCurve},
		{"HS256 with a non-[]byte key", errType},
		{"nil signing method", errMethod},
		{"claim that is not JSON", errClaim},
		{"email of another user", errEmail},
	}...)
	for _, tc := range cases {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if !errors.Is(errKid, ErrUnknownKey) || !errors.Is(errSecret, ErrNoSecret) {
		t.Errorf("errors %v, %v", errKid, errSecret)
	}
	// Nothing bad input did changed the signer or the JWKS.
	if kid := srv.SigningKID(); kid == "" || kid == "k" {
		t.Errorf("signer %q", kid)
	}
	e := &env{t: t, srv: srv, ts: httptest.NewServer(srv)}
	defer e.ts.Close()
	if a := e.jwks(); a.status != http.StatusOK || len(a.json["keys"].([]any)) != 1 {
		t.Errorf("jwks %d %s", a.status, a.raw)
	}
	big := `{"refresh_token":"` + strings.Repeat("a", maxBody) + `"}`
	if a := e.do(http.MethodPost, TokenPath+"?grant_type=refresh_token", big, nil); a.status != http.StatusBadRequest {
		t.Errorf("oversized body: %d", a.status)
	}
	if a := e.do(http.MethodGet, TokenPath, "", nil); a.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /token: %d", a.status)
	}
	if a := e.do(http.MethodGet, "/auth/v1/nope", "", nil); a.status != http.StatusNotFound {
		t.Errorf("unknown path: %d", a.status)
	}
}
