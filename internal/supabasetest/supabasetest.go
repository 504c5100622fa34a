// Package supabasetest gives credgate's tests what a real Supabase app
// gives credgate: the session cookies the real @supabase/ssr,
// supabase-js and auth-helpers write (the fixtures in
// identity/testdata/supabase, made by scripts/supabase-fixtures), a
// Supabase Auth stand-in that signs with the fixtures' keys and knows
// their refresh tokens, and a way to ask the real @supabase/ssr which
// session a Cookie header carries.
package supabasetest

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/MicahParks/jwkset"

	"github.com/credgate/credgate/sandbox/supabaseauth"
)

// PublishableKey is the stand-in's API key.
const PublishableKey = "sb_publishable_fixture"

// repoRoot is the repository's root, wherever the test runs from.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Fixture is one file of identity/testdata/supabase, made by the real
// @supabase/ssr, supabase-js and auth-helpers (scripts/supabase-fixtures).
type Fixture struct {
	Fixture      string   `json:"fixture"`
	ProjectURL   string   `json:"project_url"`
	StorageKey   string   `json:"storage_key"`
	SetCookie    []string `json:"set_cookie"`
	CookieHeader string   `json:"cookie_header"`
	UserID       string   `json:"user_id"`
	SessionID    string   `json:"session_id"`
	AccessToken  string   `json:"access_token"`
	RefreshToken string   `json:"refresh_token"`
	Alg          string   `json:"alg"`
	Expired      bool     `json:"expired"`
	Anonymous    bool     `json:"anonymous"`
}

type Keys struct {
	HS256Secret string          `json:"hs256_secret"`
	ES256       json.RawMessage `json:"es256"`
}

// Dir is where the fixtures are: SUPABASE_FIXTURES_DIR when CI
// has just regenerated them with the libraries, else the committed ones.
func Dir() string {
	if d := os.Getenv("SUPABASE_FIXTURES_DIR"); d != "" {
		return d
	}
	return filepath.Join(repoRoot(), "identity", "testdata", "supabase")
}

// Load reads every fixture, by name, and the keys that signed them.
func Load(t testing.TB) (map[string]Fixture, Keys) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(Dir(), "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]Fixture{}
	var keys Keys
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "keys.json" {
			if err := json.Unmarshal(raw, &keys); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var fx Fixture
		if err := json.Unmarshal(raw, &fx); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[fx.Fixture] = fx
	}
	// The set this test was written for: a regeneration that loses one
	// must fail here, not pass on fewer cases.
	for _, name := range []string{"ssr-single", "ssr-chunked", "ssr-es256", "ssr-expired", "ssr-raw", "auth-helpers-0.10", "ssr-anonymous"} {
		if _, ok := out[name]; !ok {
			t.Fatalf("fixture %s missing from %s", name, Dir())
		}
	}
	if keys.HS256Secret == "" || len(keys.ES256) == 0 {
		t.Fatalf("keys.json missing from %s", Dir())
	}
	return out, keys
}

// Auth is a Supabase Auth stand-in that signs with the fixtures'
// keys (so their tokens verify against its JWKS) and knows their
// refresh tokens.
func Auth(t testing.TB, fixtures map[string]Fixture, keys Keys) (*supabaseauth.Server, *httptest.Server) {
	t.Helper()
	jwk, err := jwkset.NewJWKFromRawJSON(keys.ES256, jwkset.JWKMarshalOptions{Private: true}, jwkset.JWKValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	auth := supabaseauth.New(supabaseauth.Config{
		Issuer:    fixtures["ssr-single"].ProjectURL + "/auth/v1",
		JWTSecret: []byte(keys.HS256Secret),
		APIKey:    PublishableKey,
	})
	if err := auth.AddSigningKey(jwk.Marshal().KID, jwk.Key().(*ecdsa.PrivateKey)); err != nil {
		t.Fatal(err)
	}
	// Refreshed sessions are HS256, as a project on the legacy secret
	// issues them.
	if err := auth.SignWithSecret(); err != nil {
		t.Fatal(err)
	}
	for _, fx := range fixtures {
		if fx.RefreshToken != "" && fx.SessionID != "" {
			if err := auth.AdoptSession(fx.SessionID, fx.RefreshToken, supabaseauth.User{ID: fx.UserID, Anonymous: fx.Anonymous}); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := httptest.NewServer(auth)
	t.Cleanup(srv.Close)
	return auth, srv
}

// ReadBack asks the real @supabase/ssr (scripts/supabase-fixtures) which
// session a browser sending cookieHeader has. It fails, never skips, when
// node or the packages are missing: `make test` installs them.
func ReadBack(t testing.TB, projectURL, cookieHeader string) (access, refresh string) {
	t.Helper()
	script := filepath.Join(repoRoot(), "scripts", "supabase-fixtures", "readback.mjs")
	in, _ := json.Marshal(map[string]string{"project_url": projectURL, "cookie_header": cookieHeader})
	cmd := exec.Command("node", script)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("@supabase/ssr could not read the cookies back (%v): %s\n(needs node and `npm ci` in scripts/supabase-fixtures; make test does both)", err, stderr.String())
	}
	var got struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("readback printed %q: %v", out, err)
	}
	return got.AccessToken, got.RefreshToken
}

// Browser applies Set-Cookie lines to a browser's cookie jar (a
// Cookie header) as a browser would: set, replace, or delete by Max-Age.
func Browser(before string, set []*http.Cookie) string {
	jar := map[string]string{}
	var order []string
	for part := range strings.SplitSeq(before, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		if name != "" {
			jar[name] = value
			order = append(order, name)
		}
	}
	for _, c := range set {
		if _, ok := jar[c.Name]; !ok {
			order = append(order, c.Name)
		}
		if c.MaxAge < 0 {
			delete(jar, c.Name)
		} else {
			jar[c.Name] = c.Value
		}
	}
	var parts []string
	for _, n := range order {
		if v, ok := jar[n]; ok {
			parts = append(parts, n+"="+v)
			delete(jar, n)
		}
	}
	return strings.Join(parts, "; ")
}
