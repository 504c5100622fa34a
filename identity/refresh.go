package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

const (
	// refreshTimeout bounds one call to Supabase Auth.
	refreshTimeout = 5 * time.Second
	// refreshShared: a refresh's answer is reused for the same refresh
	// token this long, so a page that fires several requests with one
	// stale cookie rotates the session once, not once per request.
	// Supabase Auth's own reuse interval (10 s by default) lets the
	// app's middleware refresh the same token meanwhile.
	refreshShared  = 10 * time.Second
	maxSessionJSON = 64 << 10
	maxShared      = 10000
)

// ErrRefreshRefused: Supabase Auth answered the refresh with a refusal
// (the refresh token is unknown, revoked or reused): the user must sign
// in again.
var ErrRefreshRefused = errors.New("supabase auth refused the refresh token")

// Refresher renews a Supabase session the way @supabase/ssr's client
// does: POST {auth_url}/token?grant_type=refresh_token with the project's
// publishable (anon) key, JSON {"refresh_token": …}. Concurrent refreshes
// of one token share one call. It is safe for concurrent use.
type Refresher struct {
	tokenURL string
	apiKey   string
	client   *http.Client
	now      func() time.Time

	mu     sync.Mutex
	shared map[[32]byte]*refreshCall
}

type refreshCall struct {
	done    chan struct{}
	session []byte
	access  string
	err     error
	at      time.Time
}

// NewRefresher returns a refresher for the Supabase Auth at authURL
// (".../auth/v1"). client may be nil.
func NewRefresher(authURL, apiKey string, client *http.Client) *Refresher {
	if client == nil {
		client = &http.Client{Timeout: refreshTimeout}
	}
	return &Refresher{tokenURL: authURL + "/token?grant_type=refresh_token", apiKey: apiKey,
		client: client, now: time.Now, shared: map[[32]byte]*refreshCall{}}
}

// Refresh returns the new session JSON (as Supabase Auth sent it, with
// expires_at filled in if it was missing) and its access token.
func (f *Refresher) Refresh(ctx context.Context, refreshToken string) ([]byte, string, error) {
	key := sha256.Sum256([]byte(refreshToken))
	f.mu.Lock()
	now := f.now()
	call, ok := f.shared[key]
	if !ok || (isClosed(call.done) && (call.err != nil || call.at.Add(refreshShared).Before(now))) {
		// A failed call is not shared: the next request tries again.
		if len(f.shared) >= maxShared {
			f.prune(now)
		}
		call = &refreshCall{done: make(chan struct{}), at: now}
		f.shared[key] = call
		go func() {
			// Not the request's context: the session is rotated for
			// every waiter, and a caller's hang-up must not leave
			// Supabase Auth with a rotated token nobody stored.
			call.session, call.access, call.err = f.call(refreshToken)
			close(call.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-call.done:
		return call.session, call.access, call.err
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}

// prune drops finished calls older than refreshShared. Called with f.mu
// held; if everything is recent, the oldest go.
func (f *Refresher) prune(now time.Time) {
	for k, c := range f.shared {
		if isClosed(c.done) && now.Sub(c.at) > refreshShared {
			delete(f.shared, k)
		}
	}
	for k, c := range f.shared {
		if len(f.shared) < maxShared {
			break
		}
		if isClosed(c.done) {
			delete(f.shared, k)
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (f *Refresher) call(refreshToken string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"refresh_token": refreshToken})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.tokenURL, bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("apikey", f.apiKey)
	req.Header.Set("X-Client-Info", "credgate")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("refreshing session: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxSessionJSON+1))
	if err != nil {
		return nil, "", fmt.Errorf("refreshing session: %w", err)
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
		var e struct {
			Code string `json:"error_code"`
		}
		_ = json.Unmarshal(raw, &e)
		return nil, "", fmt.Errorf("%w (http %d %s)", ErrRefreshRefused, resp.StatusCode, e.Code)
	}
	if resp.StatusCode != http.StatusOK || len(raw) > maxSessionJSON {
		return nil, "", fmt.Errorf("refreshing session: http %d", resp.StatusCode)
	}
	var session map[string]json.RawMessage
	if err := json.Unmarshal(raw, &session); err != nil {
		return nil, "", fmt.Errorf("refreshing session: %w", err)
	}
	var access string
	var expiresIn int64
	_ = json.Unmarshal(session["access_token"], &access)
	_ = json.Unmarshal(session["expires_in"], &expiresIn)
	if access == "" {
		return nil, "", errors.New("refreshing session: no access token in the answer")
	}
	// supabase-js fills expires_at in from expires_in when the answer
	// lacks it, and reads it to decide when to refresh.
	if _, ok := session["expires_at"]; !ok && expiresIn > 0 {
		session["expires_at"], _ = json.Marshal(f.now().Unix() + expiresIn)
		raw, _ = json.Marshal(session)
	}
	return raw, access, nil
}
