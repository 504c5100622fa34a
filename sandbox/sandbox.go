// Package sandbox emulates the OAuth servers of Twitter/X, LinkedIn,
// Facebook and Instagram, for credgate's tests, its demo and users'
// staging checks ("test all OAuth flows in staging").
//
// One http.Handler serves every platform under a base URL, on each
// platform's real paths: {base}/twitter/2/oauth2/token stands for
// https://api.x.com/2/oauth2/token, {base}/facebook/me for
// https://graph.facebook.com/me, and so on. Each platform's quirks are
// enforced, not merely tolerated, so a client that gets one wrong fails
// here as it would in production: Twitter wants HTTP Basic and PKCE S256
// and kills a refresh-token family on reuse; LinkedIn answers 401 to a
// code_verifier; Facebook speaks Graph errors and has no refresh tokens;
// Instagram speaks flat errors and refreshes only tokens a day old. Codes
// are single-use and live 30 s; redirect URIs must match exactly. Codes
// and tokens are forgotten once expired, and past a cap, so a long run
// neither grows without bound nor slows down.
//
// It is written from the platforms' documented behaviour, independently of
// the oauth package, so that it can catch that client's mistakes. Faults
// (error rate, latency, forced invalid_grant, errors inside HTTP 200, an
// HTML 502) can be injected per endpoint, and the clock moved forward.
package sandbox

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Platforms the sandbox serves.
var Platforms = []string{"twitter", "linkedin", "facebook", "instagram"}

// CodeTTL is how long an authorization code can be redeemed.
const CodeTTL = 30 * time.Second

// App is a client registered with the sandbox.
type App struct {
	Platform     string   `json:"platform"`
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret"`
	RedirectURIs []string `json:"redirect_uris"`
	// RefreshTokens, for LinkedIn, marks the app as approved for refresh
	// tokens (LinkedIn grants them only to approved partners).
	RefreshTokens bool `json:"refresh_tokens,omitempty"`
}

// DefaultApps registers one app per platform: client id
// "<platform>-client-id", secret "<platform>-client-secret", and both the
// legacy and the new callback URL on appOrigin (default
// http://localhost:8080).
func DefaultApps(appOrigin string) []App {
	if appOrigin == "" {
		appOrigin = "http://localhost:8080"
	}
	appOrigin = strings.TrimRight(appOrigin, "/")
	var apps []App
	for _, p := range Platforms {
		apps = append(apps, App{
			Platform: p, ClientID: p + "-client-id", ClientSecret: p + "-client-secret",
			RedirectURIs: []string{appOrigin + "/api/" + p + "/callback", appOrigin + "/api/auth/oauth/" + p + "/callback"},
		})
	}
	return apps
}

// Duration is a time.Duration that reads "250ms" or "2s" from JSON.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string or nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := time.ParseDuration(s)
		*d = Duration(v)
		return err
	}
	var n int64
	err := json.Unmarshal(b, &n)
	*d = Duration(n)
	return err
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Fault is what to inject at one endpoint.
type Fault struct {
	// ErrorRate answers this fraction of requests with a 503 in the
	// platform's error shape.
	ErrorRate float64 `json:"error_rate,omitempty"`
	// Latency delays every answer.
	Latency Duration `json:"latency,omitempty"`
	// InvalidGrant makes the token endpoint refuse every grant.
	InvalidGrant bool `json:"invalid_grant,omitempty"`
	// ErrorIn200 answers with an error body and status 200.
	ErrorIn200 bool `json:"error_in_200,omitempty"`
	// HTML502 answers with an HTML gateway error page.
	HTML502 bool `json:"html_502,omitempty"`
}

// Endpoint names for faults, combined as "<platform>.<endpoint>"; the
// platform or the endpoint may be "*".
const (
	EndpointAuthorize = "authorize"
	EndpointToken     = "token"
	EndpointExchange  = "exchange" // Facebook/Instagram long-lived exchange
	EndpointRefresh   = "refresh"  // Instagram ig_refresh_token
	EndpointProfile   = "profile"
	EndpointRevoke    = "revoke"
)

// Config configures a Server.
type Config struct {
	// Apps default to DefaultApps("").
	Apps []App `json:"apps,omitempty"`
	// AutoApprove skips the consent page and approves at once.
	AutoApprove bool `json:"auto_approve,omitempty"`
	// Faults by "<platform>.<endpoint>".
	Faults map[string]Fault `json:"faults,omitempty"`
	// Clock defaults to a real clock that tests can move forward.
	Clock *Clock `json:"-"`
	// MaxCodes and MaxTokens cap how many issued codes and tokens the
	// server remembers (default DefaultMaxCodes, DefaultMaxTokens). Each
	// is forgotten when it expires anyway; past the cap, the ones nearest
	// their end are forgotten first, and a client that presents one is
	// refused as it would be for an unknown value.
	MaxCodes  int `json:"max_codes,omitempty"`
	MaxTokens int `json:"max_tokens,omitempty"`
	// AccessTTL sets how long the access tokens of a platform live, by
	// platform: "twitter" (default 2h) or "linkedin" (default 60 days),
	// the two whose tokens are renewed with a refresh token. For staging
	// checks and benchmarks of renewals that should not wait hours:
	// {"access_ttl": {"twitter": "2m"}}.
	AccessTTL map[string]Duration `json:"access_ttl,omitempty"`
}

// accessTTLs are the platforms whose access-token life Config.AccessTTL
// may set, with their defaults.
var accessTTLs = map[string]time.Duration{"twitter": twitterAccessTTL, "linkedin": linkedinAccessTTL}

// Check reports a configuration the server cannot honour.
func (c Config) Check() error {
	for platform, ttl := range c.AccessTTL {
		if _, ok := accessTTLs[platform]; !ok {
			return fmt.Errorf("access_ttl: %q is not a platform whose access-token life can be set (twitter, linkedin)", platform)
		}
		if time.Duration(ttl) < time.Second {
			return fmt.Errorf("access_ttl: %s for %s is shorter than a second", time.Duration(ttl), platform)
		}
	}
	return nil
}

// Clock is the sandbox's notion of now: real time plus an offset that only
// grows.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the sandbox time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += max(d, 0)
	c.mu.Unlock()
}

// PlatformStats counts what clients really did at one platform.
type PlatformStats struct {
	CodesIssued   int            `json:"codes_issued"`
	CodesRedeemed int            `json:"codes_redeemed"`
	TokensIssued  int            `json:"tokens_issued"`
	Refreshes     int            `json:"refreshes"`
	RefreshReuse  int            `json:"refresh_token_reuse_detected"`
	Revocations   int            `json:"revocations"`
	Posts         int            `json:"posts"`
	Rejected      map[string]int `json:"rejected"`
}

type code struct {
	app       *App
	redirect  string
	challenge string
	scopes    []string
	user      identity
	issued    time.Time
	redeemed  bool
}

type identity struct {
	ID, Name string
}

type token struct {
	app      *App
	user     identity
	scopes   []string
	issued   time.Time
	expires  time.Time
	family   string
	long     bool // Facebook/Instagram long-lived
	revoked  bool
	refresh  bool // a refresh token
	replaced bool // a rotated refresh token
}

// Server is the emulator. It is safe for concurrent use.
type Server struct {
	autoApprove bool
	clock       *Clock

	mu     sync.Mutex
	apps   map[string]*App // by platform + client id
	faults map[string]Fault
	codes  map[string]*code
	tokens map[string]*token
	// codeLife and tokenLife forget codes and tokens when they no longer
	// matter (expiry.go).
	codeLife, tokenLife forgetting
	families            map[string]bool // revoked refresh-token families
	stats               map[string]*PlatformStats
	// accessTTLs: Config.AccessTTL over the defaults.
	accessTTLs map[string]time.Duration
}

// New returns a sandbox server.
func New(cfg Config) *Server {
	if cfg.Apps == nil {
		cfg.Apps = DefaultApps("")
	}
	if cfg.Clock == nil {
		cfg.Clock = &Clock{}
	}
	s := &Server{
		autoApprove: cfg.AutoApprove, clock: cfg.Clock,
		apps: map[string]*App{}, faults: map[string]Fault{}, codes: map[string]*code{},
		tokens: map[string]*token{}, families: map[string]bool{}, stats: map[string]*PlatformStats{},
		codeLife:  forgetting{max: cmp.Or(max(cfg.MaxCodes, 0), DefaultMaxCodes)},
		tokenLife: forgetting{max: cmp.Or(max(cfg.MaxTokens, 0), DefaultMaxTokens)},
	}
	for i := range cfg.Apps {
		a := cfg.Apps[i]
		s.apps[a.Platform+"/"+a.ClientID] = &a
	}
	maps.Copy(s.faults, cfg.Faults)
	s.accessTTLs = maps.Clone(accessTTLs)
	for platform, ttl := range cfg.AccessTTL {
		if _, ok := s.accessTTLs[platform]; ok && ttl > 0 {
			s.accessTTLs[platform] = time.Duration(ttl)
		}
	}
	for _, p := range Platforms {
		s.stats[p] = &PlatformStats{Rejected: map[string]int{}}
	}
	return s
}

// Apps lists the registered apps, for printing at start.
func (s *Server) Apps() []App {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []App
	for _, a := range s.apps {
		out = append(out, *a)
	}
	slices.SortFunc(out, func(a, b App) int { return strings.Compare(a.Platform+a.ClientID, b.Platform+b.ClientID) })
	return out
}

// accessTTL is how long platform's access tokens live.
func (s *Server) accessTTL(platform string) time.Duration { return s.accessTTLs[platform] }

// Clock is the server's clock.
func (s *Server) Clock() *Clock { return s.clock }

// SetFault sets (or, with the zero Fault, clears) the fault for key
// "<platform>.<endpoint>".
func (s *Server) SetFault(key string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == (Fault{}) {
		delete(s.faults, key)
		return
	}
	s.faults[key] = f
}

// Stats returns a copy of the counters.
func (s *Server) Stats() map[string]PlatformStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]PlatformStats{}
	for p, st := range s.stats {
		c := *st
		c.Rejected = maps.Clone(st.Rejected)
		out[p] = c
	}
	return out
}

func (s *Server) fault(platform, endpoint string) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []string{platform + "." + endpoint, platform + ".*", "*." + endpoint, "*.*", "*"} {
		if f, ok := s.faults[k]; ok {
			return f
		}
	}
	return Fault{}
}

// reject counts a refused request by reason; call with s.mu held.
func (s *Server) reject(platform, reason string) {
	s.stats[platform].Rejected[reason]++
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// userFor derives a stable platform identity from a sandbox user name, in
// the shape each platform uses (Instagram's ids exceed 2^53 on purpose:
// a client that parses them as float64 corrupts them).
func userFor(platform, name string) identity {
	if name == "" {
		name = "sandbox-user"
	}
	var h uint64 = 1469598103934665603
	for _, c := range platform + "/" + name {
		h = (h ^ uint64(c)) * 1099511628211
	}
	switch platform {
	case "twitter":
		return identity{ID: fmt.Sprint(1_000_000_000 + h%9_000_000_000), Name: name}
	case "linkedin":
		return identity{ID: base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprint(h)))[:10], Name: name}
	case "facebook":
		return identity{ID: fmt.Sprint(10_000_000_000_000 + h%90_000_000_000_000), Name: name}
	default:
		return identity{ID: fmt.Sprint(17_841_400_000_000_001 + h%1_000_000_000), Name: name}
	}
}
