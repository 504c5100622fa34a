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
	// refreshShared: a refresh's answer (or failure) is reused for the
	// same refresh token this long after it came, so a page that fires
	// several requests with one stale cookie rotates the session once.
	// Supabase Auth's own reuse interval (10 s by default) lets the app's
	// middleware refresh the same token meanwhile.
	refreshShared = 10 * time.Second
	// perUserCalls: at most this many calls to Supabase Auth per user
	// per refreshShared. A user with a validly signed expired token could
	// otherwise make credgate call Supabase Auth once per request with
	// made-up refresh tokens, and use up the project's per-IP refresh
	// rate limit for everyone behind credgate.
	perUserCalls = 3
	// maxInFlight caps the calls running at once, whoever asked.
	maxInFlight    = 32
	maxSessionJSON = 64 << 10
	maxShared      = 10000
)

var (
	// ErrRefreshRefused: Supabase Auth answered the refresh with a
	// refusal (the refresh token is unknown, revoked or reused): the user
	// must sign in again.
	ErrRefreshRefused = errors.New("supabase auth refused the refresh token")
	// ErrRefreshLimited: this user's refreshes, or everyone's, are past
	// their limit; the request is treated as signed out and the app's
	// own middleware refreshes the session.
	ErrRefreshLimited = errors.New("too many session refreshes")
)

// Refresher renews a Supabase session the way @supabase/ssr's client
// does: POST {auth_url}/token?grant_type=refresh_token with the project's
// publishable (anon) key, JSON {"refresh_token": …}. Concurrent refreshes
// of one token share one call. It is safe for concurrent use.
type Refresher struct {
	tokenURL string
	apiKey   string
	client   *http.Client
	now      func() time.Time
	slots    chan struct{}

	mu        sync.Mutex
	shared    map[[32]byte]*refreshCall
	perUser   map[string]*userCalls
	lastPrune time.Time
}

type refreshCall struct {
	done    chan struct{}
	session []byte
	access  string
	err     error
	ended   time.Time // set before done closes
}

type userCalls struct {
	since time.Time
	calls int
}

// NewRefresher returns a refresher for the Supabase Auth at authURL
// (".../auth/v1"). client may be nil.
func NewRefresher(authURL, apiKey string, client *http.Client) *Refresher {
	if client == nil {
		client = &http.Client{Timeout: refreshTimeout}
	}
	return &Refresher{tokenURL: authURL + "/token?grant_type=refresh_token", apiKey: apiKey,
		client: client, now: time.Now, slots: make(chan struct{}, maxInFlight),
		shared: map[[32]byte]*refreshCall{}, perUser: map[string]*userCalls{}}
}

// Refresh returns the new session JSON (as Supabase Auth sent it, with
// expires_at filled in if it was missing) and its access token. user is
// the id the stale (validly signed) access token names: its calls are
// limited.
func (f *Refresher) Refresh(ctx context.Context, user, refreshToken string) ([]byte, string, error) {
	key := sha256.Sum256([]byte(refreshToken))
	f.mu.Lock()
	now := f.now()
	f.prune(now)
	call, ok := f.shared[key]
	if !ok || (isClosed(call.done) && now.Sub(call.ended) > refreshShared) {
		if !f.allow(user, now) {
			f.mu.Unlock()
			return nil, "", ErrRefreshLimited
		}
		select {
		case f.slots <- struct{}{}:
		default:
			f.mu.Unlock()
			return nil, "", ErrRefreshLimited
		}
		call = &refreshCall{done: make(chan struct{})}
		f.shared[key] = call
		go func() {
			defer func() { <-f.slots }()
			// Not the request's context: the session is rotated for
			// every waiter, and a caller's hang-up must not leave
			// Supabase Auth with a rotated token nobody stored.
			session, access, err := f.call(refreshToken)
			f.mu.Lock()
			call.session, call.access, call.err, call.ended = session, access, err, f.now()
			f.mu.Unlock()
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

// allow counts a call for user, or refuses it past perUserCalls in the
// window. Called with f.mu held.
func (f *Refresher) allow(user string, now time.Time) bool {
	u := f.perUser[user]
	if u == nil || now.Sub(u.since) > refreshShared {
		if len(f.perUser) >= maxShared {
			return false
		}
		u = &userCalls{since: now}
		f.perUser[user] = u
	}
	if u.calls >= perUserCalls {
		return false
	}
	u.calls++
	return true
}

// prune drops what is past its window, at most once a second, so the
// maps hold only the last few seconds' sessions and users. Called with
// f.mu held.
func (f *Refresher) prune(now time.Time) {
	if now.Sub(f.lastPrune) < time.Second {
		return
	}
	f.lastPrune = now
	for k, c := range f.shared {
		if isClosed(c.done) && now.Sub(c.ended) > refreshShared {
			delete(f.shared, k)
		}
	}
	for k, u := range f.perUser {
		if now.Sub(u.since) > refreshShared {
			delete(f.perUser, k)
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
