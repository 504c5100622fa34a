package runbooktest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
)

// stubApp is the app credgate is put in front of: its own OAuth flow on
// /api/<platform>/connect and /api/<platform>/callback, writing plaintext
// tokens to its own social_accounts (knowing nothing of credgate's
// columns), and a back end that posts for a user with the token from
// its own table or from credgate's token API.
type stubApp struct {
	w         *world
	url       string
	providers map[string]*oauth.Provider
	apiBase   map[string]string
	mode      atomic.Int32

	mu      sync.Mutex
	pending map[string]pendingFlow // by state
}

type pendingFlow struct {
	user, platform string
	verifier       secret.Value
}

// Where the back end reads tokens.
const (
	readTable int32 = iota
	readTokenAPI
)

func newStubApp(t *testing.T, w *world) *stubApp {
	a := &stubApp{w: w, providers: map[string]*oauth.Provider{}, apiBase: map[string]string{}, pending: map[string]pendingFlow{}}
	for _, p := range platforms {
		auth, token, api, err := oauth.SandboxURLs(p, w.sandboxURL)
		if err != nil {
			t.Fatal(err)
		}
		prov, err := oauth.New(p, oauth.Config{ClientID: p + "-client-id", ClientSecret: secret.New(p + "-client-secret"),
			RedirectURL: w.front + "/api/" + p + "/callback", AuthURL: auth, TokenURL: token, APIBase: api,
			Scopes: postScopes[p], Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		a.providers[p], a.apiBase[p] = prov, api
	}
	srv := httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

func (a *stubApp) setMode(m int32) { a.mode.Store(m) }

func (a *stubApp) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 3 || parts[0] != "api" {
		http.NotFound(w, r)
		return
	}
	platform, step := parts[1], parts[2]
	p, ok := a.providers[platform]
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch step {
	case "connect":
		user := r.Header.Get("X-Test-User")
		start, err := p.Begin()
		if err != nil || user == "" {
			http.Error(w, fmt.Sprintf("connect: %v (user %q)", err, user), http.StatusBadRequest)
			return
		}
		a.mu.Lock()
		a.pending[start.State.Reveal()] = pendingFlow{user, platform, start.Verifier}
		a.mu.Unlock()
		http.Redirect(w, r, start.URL, http.StatusFound)
	case "callback":
		a.mu.Lock()
		flow, ok := a.pending[r.URL.Query().Get("state")]
		delete(a.pending, r.URL.Query().Get("state"))
		a.mu.Unlock()
		if !ok || flow.platform != platform {
			http.Redirect(w, r, "/?legacy_error=invalid_state", http.StatusFound)
			return
		}
		if err := a.complete(r.Context(), flow, r.URL.Query().Get("code")); err != nil {
			http.Redirect(w, r, "/?legacy_error="+err.Error(), http.StatusFound)
			return
		}
		http.Redirect(w, r, "/?legacy_connected="+platform, http.StatusFound)
	default:
		http.NotFound(w, r)
	}
}

// complete exchanges the code and stores the tokens as the app always
// has: its own upsert, on its own columns.
func (a *stubApp) complete(ctx context.Context, flow pendingFlow, code string) error {
	tok, err := a.providers[flow.platform].Complete(ctx, secret.New(code), flow.verifier)
	if err != nil {
		return err
	}
	var expires *time.Time
	if !tok.Expiry.IsZero() {
		expires = &tok.Expiry
	}
	var refresh *string
	if r := tok.RefreshToken.Reveal(); r != "" {
		refresh = &r
	}
	_, err = a.w.pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, platform_user_id, username, access_token, refresh_token, token_expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id, platform) DO UPDATE SET platform_user_id = EXCLUDED.platform_user_id, username = EXCLUDED.username,
			access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token, token_expires_at = EXCLUDED.token_expires_at`,
		flow.user, flow.platform, tok.PlatformUserID, tok.Username, tok.AccessToken.Reveal(), refresh, expires)
	return err
}

// seed is a connect the app made before credgate existed.
func (a *stubApp) seed(t *testing.T, user, platform string) {
	t.Helper()
	p := a.providers[platform]
	start, err := p.Begin()
	if err != nil {
		t.Fatal(err)
	}
	client := testhttp.NoRedirects()
	resp, err := client.Get(start.URL + "&sandbox_user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("seeding %s/%s: the sandbox answered %d %q", user, platform, resp.StatusCode, resp.Header.Get("Location"))
	}
	if err := a.complete(context.Background(), pendingFlow{user, platform, start.Verifier}, loc.Query().Get("code")); err != nil {
		t.Fatalf("seeding %s/%s: %v", user, platform, err)
	}
}

// post makes a post for the user, with the token the back end reads
// where it reads tokens at this step.
func (a *stubApp) post(user, platform string) error {
	var token string
	var err error
	if a.mode.Load() == readTokenAPI {
		token, err = a.fromTokenAPI(user, platform)
	} else {
		token, err = a.fromTable(user, platform)
	}
	if err != nil {
		return err
	}
	// As each platform takes a post: X a JSON body, the others a form.
	body, contentType := "text=hello", "application/x-www-form-urlencoded"
	if platform == "twitter" {
		body, contentType = `{"text":"hello"}`, "application/json"
	}
	req, _ := http.NewRequest(http.MethodPost, a.apiBase[platform]+postPaths[platform], strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	resp, err := testhttp.Client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("the platform refused the post: %d %s", resp.StatusCode, b)
	}
	return nil
}

func (a *stubApp) fromTable(user, platform string) (string, error) {
	var token *string
	err := a.w.pool.QueryRow(context.Background(), `SELECT access_token FROM social_accounts WHERE user_id = $1 AND platform = $2`,
		user, platform).Scan(&token)
	if err != nil {
		return "", fmt.Errorf("reading its own table: %w", err)
	}
	if token == nil {
		return "", fmt.Errorf("its own table has no token")
	}
	return *token, nil
}

func (a *stubApp) fromTokenAPI(user, platform string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, a.w.internal+"/api/internal/credentials/"+user+"/"+platform+"/token", nil)
	req.Header.Set("Authorization", "Bearer "+serviceToken)
	resp, err := testhttp.Client().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the token API answered %d: %s", resp.StatusCode, body)
	}
	var v struct {
		AccessToken string     `json:"access_token"`
		ExpiresAt   *time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", err
	}
	if v.ExpiresAt == nil {
		return "", fmt.Errorf("the token API vouched for a token with no expiry")
	}
	return v.AccessToken, nil
}

func (a *stubApp) tableToken(t *testing.T, user, platform string) string {
	t.Helper()
	tok, err := a.fromTable(user, platform)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (a *stubApp) tokenAPIToken(t *testing.T, user, platform string) string {
	t.Helper()
	tok, err := a.fromTokenAPI(user, platform)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
