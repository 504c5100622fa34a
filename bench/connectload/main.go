// Command connectload drives whole OAuth authorization-code connects
// (start → the provider's authorize → callback) from concurrent clients
// for a fixed time, and prints one JSON line: flows per second, latency
// percentiles and, when asked, the CPU that named processes spent per
// flow. bench/connect.sh runs it against credgate (with the sandbox or
// with mockoidc as the provider) and against oauth2-proxy on the same
// mockoidc, in alternating rounds, so the two can be compared as ratios.
//
// Each flow is a fresh user: with -jwt-secret the driver signs an HS256
// session JWT for a new user id, as the app's login would. Every request
// goes to the loopback addresses it is given.
//
// -provider starts mockoidc (github.com/oauth2-proxy/mockoidc) on an
// address and holds it for the other runs; mockoidc's session store is not
// safe for concurrent use, so it is served one request at a time, which
// makes it a ceiling shared by every target measured on it
// (-provider-only measures that ceiling with a trivial client).
package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/credgate/credgate/bench/internal/loadrun"
)

func main() {
	serve := flag.String("serve-provider", "", "only run mockoidc on this address until interrupted, printing its endpoints")
	clientID := flag.String("client-id", "connectload-client", "client id mockoidc accepts (-serve-provider)")
	clientSecret := flag.String("client-secret", "connectload-secret-0123456789", "client secret mockoidc accepts (-serve-provider)")
	start := flag.String("start", "", "start URL of the target (credgate's /api/auth/oauth/<platform>?return_to=/ or oauth2-proxy's /oauth2/start?rd=/)")
	providerOnly := flag.String("provider-only", "", "measure mockoidc alone at this base URL: authorize + token + userinfo per flow, no gateway")
	sandboxOnly := flag.String("sandbox-only", "", "measure credgate's sandbox alone at this base URL: Twitter's authorize + token + users/me per flow, no gateway")
	appOrigin := flag.String("app-origin", "", "with -sandbox-only: the sandbox's --app-origin, whose callback URL the flows name")
	jwtSecret := flag.String("jwt-secret", "", "sign a session JWT for a fresh user per flow with this HS256 secret")
	jwtCookie := flag.String("jwt-cookie", "sb-access-token", "the cookie that carries the session JWT")
	conc := flag.Int("c", 8, "concurrent flows")
	dur := flag.Duration("d", 10*time.Second, "how long to measure")
	flows := flag.Int64("flows", 0, "measure this many flows instead of for -d")
	cpu := flag.String("cpu", "", "processes whose CPU to report per flow: name=pid,… (pid may be a pid file); name=postgres sums every process named postgres")
	walDB := flag.String("wal-database-url", "", "report the WAL PostgreSQL wrote per flow (and its full pages and checkpoints), read through this database")
	label := flag.String("label", "", "a label copied into the output")
	summarize := flag.String("summarize", "", "instead of measuring: summarize this file of result lines (median per label, ratios against -baseline)")
	baseline := flag.String("baseline", "", "with -summarize: the label the others are compared with")
	flag.Parse()

	if *summarize != "" {
		if err := loadrun.SummarizeFile(*summarize, *baseline, os.Stdout); err != nil {
			fail(err)
		}
		return
	}

	if *serve != "" {
		if err := serveProvider(*serve, *clientID, *clientSecret); err != nil {
			fail(err)
		}
		return
	}
	var run func() error
	switch {
	case *providerOnly != "":
		run = providerFlow(strings.TrimSuffix(*providerOnly, "/"), *clientID, *clientSecret)
	case *sandboxOnly != "":
		if *appOrigin == "" {
			fmt.Fprintln(os.Stderr, "connectload: -sandbox-only needs -app-origin")
			os.Exit(2)
		}
		run = sandboxFlow(strings.TrimSuffix(*sandboxOnly, "/"), strings.TrimSuffix(*appOrigin, "/"))
	case *start != "":
		run = gatewayFlow(*start, *jwtSecret, *jwtCookie)
	default:
		fmt.Fprintln(os.Stderr, "connectload: need -start, -provider-only, -sandbox-only or -serve-provider")
		os.Exit(2)
	}
	meters, err := loadrun.ParseCPU(*cpu)
	if err != nil {
		fail(err)
	}
	// One flow that must work before anything is measured: a broken
	// config fails here with the target's own answer.
	if err := run(); err != nil {
		fail(fmt.Errorf("warm-up flow: %w", err))
	}
	var wal *pgx.Conn
	var wal0 loadrun.WALMark
	if *walDB != "" {
		if wal, err = pgx.Connect(context.Background(), *walDB); err != nil {
			fail(fmt.Errorf("-wal-database-url: %w", err))
		}
		defer wal.Close(context.Background())
		if wal0, err = loadrun.MarkWAL(context.Background(), wal); err != nil {
			fail(err)
		}
	}
	res := loadrun.Measure(run, *conc, *dur, *flows, meters)
	if wal != nil {
		if err := loadrun.AddWALSince(context.Background(), wal, &res, wal0); err != nil {
			fail(err)
		}
	}
	res.Label = *label
	json.NewEncoder(os.Stdout).Encode(res)
	if res.Flows == 0 {
		os.Exit(1)
	}
}

// ---- flows ----

var noFollow = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
var transport = &http.Transport{MaxIdleConnsPerHost: 256}

// gatewayFlow is one connect through a gateway: its start redirects to the
// provider, the provider (auto-approving) redirects to the gateway's
// callback, and the callback redirects to where the user is sent back,
// which must not carry an error.
func gatewayFlow(start, jwtSecret, jwtCookie string) func() error {
	return func() error {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, CheckRedirect: noFollow, Transport: transport, Timeout: 10 * time.Second}
		var session string
		if jwtSecret != "" {
			session = jwtCookie + "=" + mintJWT(jwtSecret, newUUID())
		}
		authorize, err := redirect(c, start, session)
		if err != nil {
			return fmt.Errorf("start: %w", err)
		}
		callback, err := redirect(c, authorize, "")
		if err != nil {
			return fmt.Errorf("authorize: %w", err)
		}
		final, err := redirect(c, callback, session)
		if err != nil {
			return fmt.Errorf("callback: %w", err)
		}
		if strings.Contains(final, "error") {
			return fmt.Errorf("callback redirected to %s", final)
		}
		return nil
	}
}

// sandboxFlow is the sandbox's share of one Twitter connect, with a
// trivial client in credgate's place: authorize (auto-approved: a
// redirect with a code), the token exchange with PKCE and HTTP Basic, and
// users/me, the three requests credgate's connect makes of it. Nothing
// else runs in its rounds, so they show the sandbox's own pace as its
// memory fills to its caps and holds there.
func sandboxFlow(base, appOrigin string) func() error {
	const clientID, secret = "twitter-client-id", "twitter-client-secret"
	cb := appOrigin + "/api/auth/oauth/twitter/callback"
	return func() error {
		c := &http.Client{CheckRedirect: noFollow, Transport: transport, Timeout: 10 * time.Second}
		verifier := randomString(32)
		sum := sha256.Sum256([]byte(verifier))
		q := url.Values{"client_id": {clientID}, "response_type": {"code"}, "scope": {"tweet.read users.read offline.access"},
			"redirect_uri": {cb}, "state": {randomString(16)},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
		loc, err := redirect(c, base+"/twitter/i/oauth2/authorize?"+q.Encode(), "")
		if err != nil {
			return fmt.Errorf("authorize: %w", err)
		}
		u, err := url.Parse(loc)
		if err != nil {
			return err
		}
		if u.Query().Get("code") == "" {
			return fmt.Errorf("authorize redirected without a code: %s", u.Query().Get("error"))
		}
		form := url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")}, "redirect_uri": {cb},
			"code_verifier": {verifier}}
		req, _ := http.NewRequest(http.MethodPost, base+"/twitter/2/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(clientID, secret)
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		var tok struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tok)
		drain(resp)
		if err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" || tok.RefreshToken == "" {
			return fmt.Errorf("token: status %d (%v)", resp.StatusCode, err)
		}
		return bearerGET(c, base+"/twitter/2/users/me", tok.AccessToken, "users/me")
	}
}

// providerFlow is the provider's share of one flow with a trivial client:
// authorize (a redirect with a code), the token exchange with PKCE, and
// userinfo. It is the ceiling that gateways on mockoidc share.
func providerFlow(base, clientID, secret string) func() error {
	return func() error {
		c := &http.Client{CheckRedirect: noFollow, Transport: transport, Timeout: 10 * time.Second}
		verifier := randomString(32)
		sum := sha256.Sum256([]byte(verifier))
		const cb = "http://127.0.0.1:1/cb"
		q := url.Values{"client_id": {clientID}, "response_type": {"code"}, "scope": {"openid profile email"},
			"redirect_uri": {cb}, "state": {randomString(16)}, "nonce": {randomString(16)},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
		loc, err := redirect(c, base+mockoidc.AuthorizationEndpoint+"?"+q.Encode(), "")
		if err != nil {
			return fmt.Errorf("authorize: %w", err)
		}
		u, err := url.Parse(loc)
		if err != nil {
			return err
		}
		form := url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")}, "redirect_uri": {cb},
			"client_id": {clientID}, "client_secret": {secret}, "code_verifier": {verifier}}
		resp, err := c.PostForm(base+mockoidc.TokenEndpoint, form)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tok)
		drain(resp)
		if err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
			return fmt.Errorf("token: status %d (%v)", resp.StatusCode, err)
		}
		return bearerGET(c, base+mockoidc.UserinfoEndpoint, tok.AccessToken, "userinfo")
	}
}

// bearerGET is a provider's profile call with the access token a flow
// got: anything but 200 is an error named what.
func bearerGET(c *http.Client, rawURL, token, what string) error {
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", what, resp.StatusCode)
	}
	return nil
}

// redirect GETs rawURL and returns where it redirects; anything but a
// redirect is an error that quotes the start of the body.
func redirect(c *http.Client, rawURL, cookie string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return "", err
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		head, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return "", fmt.Errorf("status %d: %q", resp.StatusCode, head)
	}
	loc, err := resp.Location()
	if err != nil {
		return "", err
	}
	return loc.String(), nil
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// ---- the shared provider ----

// serveProvider runs mockoidc until interrupted. Its endpoints are fixed
// paths under the printed base URL.
func serveProvider(addr, clientID, secret string) error {
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		return err
	}
	m.ClientID, m.ClientSecret = clientID, secret
	var serial sync.Mutex
	served := map[string]int{} // requests by path, printed on the way out
	if err := m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serial.Lock()
			defer serial.Unlock()
			served[r.URL.Path]++
			next.ServeHTTP(w, r)
		})
	}); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if err := m.Start(ln, nil); err != nil {
		return err
	}
	defer m.Shutdown()
	fmt.Printf("mockoidc issuer=%s authorize=%s token=%s userinfo=%s\n",
		m.Issuer(), m.AuthorizationEndpoint(), m.TokenEndpoint(), m.UserinfoEndpoint())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	serial.Lock()
	defer serial.Unlock()
	fmt.Printf("mockoidc served %v\n", served)
	return nil
}

// ---- identities ----

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// mintJWT signs a session token like `caddy credgate devtoken` does.
func mintJWT(secret, sub string) string {
	enc := base64.RawURLEncoding
	now := time.Now().Unix()
	body, _ := json.Marshal(map[string]any{"sub": sub, "iat": now, "exp": now + 3600, "role": "authenticated"})
	msg := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(mac.Sum(nil))
}

func fail(err error) {
	var ne *net.OpError
	if errors.As(err, &ne) {
		err = fmt.Errorf("%w (is the target running?)", err)
	}
	fmt.Fprintln(os.Stderr, "connectload:", err)
	os.Exit(1)
}
