package oauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/oauth2"

	"github.com/credgate/credgate/secret"
)

// PKCE is a platform's PKCE policy.
type PKCE int

// The policies.
const (
	// PKCENever: the platform rejects code_verifier (LinkedIn answers 401).
	PKCENever PKCE = iota
	// PKCES256: S256 is sent whenever the platform accepts it.
	PKCES256
	// PKCERequired: the platform refuses a flow without S256 (Twitter/X).
	PKCERequired
)

// DefaultTimeout bounds every outbound call unless Config.Timeout says
// otherwise.
const DefaultTimeout = 10 * time.Second

// plausibleLifetime is the longest expires_in believed. Larger values
// (nanoseconds by mistake, "never") fall back to the profile's documented
// lifetime rather than storing a token that never looks expired.
const plausibleLifetime = 366 * 24 * time.Hour

// TokenSet is what a completed flow or a refresh yields.
type TokenSet struct {
	AccessToken  secret.Value
	RefreshToken secret.Value
	TokenType    string
	// Expiry is when the access token stops working; zero when unknown.
	Expiry time.Time
	// IssuedAt is when the access token was issued (Instagram only
	// refreshes tokens at least 24 h old).
	IssuedAt       time.Time
	Scopes         []string
	PlatformUserID string
	Username       string
	// idToken is the OIDC ID token of a code exchange's response, read
	// for the identity (generic) and never stored.
	idToken secret.Value
}

// Identity is the account a token belongs to.
type Identity struct {
	ID       string
	Username string
}

// Start is a flow being begun: send the browser to URL, keep the rest
// (State in oauth_states, BrowserBinding in a cookie).
type Start struct {
	URL            string
	State          secret.Value
	Verifier       secret.Value
	BrowserBinding secret.Value
}

// Profile describes one platform. The built-in ones come from Lookup; a
// Profile's URLs can be overridden per Provider through Config.
type Profile struct {
	Name     string
	AuthURL  string
	TokenURL string
	// APIBase is the origin of the platform's API (profile, revoke,
	// long-lived exchange).
	APIBase        string
	AuthStyle      oauth2.AuthStyle
	PKCE           PKCE
	ScopeSeparator string
	DefaultScopes  []string
	// DefaultLifetime is assumed when expires_in is missing or implausible.
	DefaultLifetime time.Duration
	// Renewal is how a token is renewed without the user, for the
	// background refresh.
	Renewal Renewal
	// MinRefreshAge is how old a token must be before the platform
	// renews it (Instagram: 24 h).
	MinRefreshAge time.Duration

	errors errorParser
	// exchange replaces the standard code exchange (Instagram).
	exchange func(ctx context.Context, p *Provider, code string, verifier secret.Value, redirectURL string) (TokenSet, error)
	// afterExchange swaps a short-lived token for a long-lived one.
	afterExchange func(ctx context.Context, p *Provider, t TokenSet) (TokenSet, error)
	refresh       func(ctx context.Context, p *Provider, t TokenSet) (TokenSet, error)
	revoke        func(ctx context.Context, p *Provider, t TokenSet) error
	identify      func(ctx context.Context, p *Provider, access secret.Value) (Identity, error)
	// grantedScopes asks the platform which scopes a token holds, for a
	// platform whose token response does not say (Facebook's
	// /me/permissions).
	grantedScopes func(ctx context.Context, p *Provider, access secret.Value) ([]string, error)
	// identifyIDToken reads the identity from the exchange's ID token
	// instead of calling identify; false: the token does not say, ask
	// identify.
	identifyIDToken func(p *Provider, idToken string) (Identity, bool)
}

// Renewal is how a platform renews a token without the user.
type Renewal int

// The renewal strategies.
const (
	// RenewWithRefreshToken: the refresh_token grant, when the token set
	// has a refresh token (Twitter/X, LinkedIn for approved apps, generic).
	// Refresh tokens outlive access tokens, so an expired access token
	// can still be renewed.
	RenewWithRefreshToken Renewal = iota
	// RenewAccessToken: the live access token itself is exchanged for a
	// new one (Instagram's ig_refresh_token); an expired one cannot be.
	RenewAccessToken
	// RenewNever: only the user can renew (Facebook): the account is
	// marked expiring ahead of expiry and needs_reauth at expiry.
	RenewNever
)

// Config is one app's registration at a platform, plus overrides.
type Config struct {
	ClientID     string
	ClientSecret secret.Value
	// RedirectURL is the callback registered at the platform.
	RedirectURL string
	// Scopes default to the profile's.
	Scopes []string
	// AuthURL, TokenURL and APIBase override the profile's, for a sandbox
	// or a proxy.
	AuthURL, TokenURL, APIBase string
	// Timeout bounds each outbound call; default DefaultTimeout.
	Timeout time.Duration
	// Transport carries the requests; default http.DefaultTransport.
	Transport http.RoundTripper
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Generic configures the generic profile; ignored by the others.
	Generic GenericSettings
	// Kind, when set, is the profile of a provider whose name is not a
	// profile's: New("acme", Config{Kind: "generic", …}) is a generic
	// provider named acme (routes, audit rows and metrics say "acme").
	// Only "generic" may take another name; a built-in platform's kind is
	// its name.
	Kind string
	// Tracer, if set, traces the code exchange and the profile lookup
	// (credgate.oauth.exchange, credgate.oauth.profile).
	Tracer trace.Tracer
}

// GenericSettings configure the "generic" profile for any standard OAuth
// 2.0 / OIDC provider.
type GenericSettings struct {
	UserinfoURL string
	RevokeURL   string
	// AuthStyle is how the client authenticates at the token (and revoke)
	// endpoint: "basic" (client_secret_basic: HTTP Basic, the OIDC
	// registration default), "post" (client_secret_post: in the form
	// body), or "auto" (the default: basic first, then post, remembering
	// what worked, as x/oauth2 does). "header" and "params" are accepted
	// for basic and post.
	AuthStyle string
	// PKCE sends S256 (default true).
	PKCE *bool
	// IDField and NameField name the userinfo JSON fields; default "sub"
	// and "preferred_username".
	IDField, NameField string
	ScopeSeparator     string
}

// sharedTransport is the connection pool every Provider without a
// Transport of its own uses: one per process, like http.DefaultTransport
// (a pool per Provider would keep idle connections, and their
// goroutines, for every config a reload left behind), but keeping 32 idle
// connections per platform instead of 2, so that concurrent renewals
// reuse warm connections instead of each opening (and TLS-handshaking)
// a new one.
var sharedTransport = sync.OnceValue(func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	return t
})

// CloseIdleConnections closes the shared pool's idle connections (they
// are bounded and time out after 90 s anyway; tests that count
// goroutines call it).
func CloseIdleConnections() { sharedTransport().(*http.Transport).CloseIdleConnections() }

// Provider is a Profile bound to one app's credentials.
type Provider struct {
	profile Profile
	cfg     Config
	oauth   *oauth2.Config
	client  *http.Client
	now     func() time.Time
}

// New returns the provider for platform ("twitter", "linkedin",
// "facebook", "instagram" or "generic") with cfg.
func New(platform string, cfg Config) (*Provider, error) {
	kind := platform
	if cfg.Kind != "" && cfg.Kind != platform {
		if cfg.Kind != "generic" {
			return nil, fmt.Errorf("oauth %s: kind %q: only a generic provider may have a name of its own", platform, cfg.Kind)
		}
		if !validName(platform) || slices.Contains(Platforms, platform) {
			return nil, fmt.Errorf("oauth %q: a provider name is 1-32 lowercase letters, digits, - or _, starting with a letter, and not a built-in platform's", platform)
		}
		kind = cfg.Kind
	}
	profile, err := Lookup(kind, cfg.Generic)
	if err != nil {
		return nil, err
	}
	profile.Name = platform
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("oauth %s: client_id is required", platform)
	}
	if cfg.RedirectURL == "" {
		return nil, fmt.Errorf("oauth %s: redirect_url is required", platform)
	}
	for name, override := range map[string]*string{"auth_url": &profile.AuthURL, "token_url": &profile.TokenURL, "api_base": &profile.APIBase} {
		v := map[string]string{"auth_url": cfg.AuthURL, "token_url": cfg.TokenURL, "api_base": cfg.APIBase}[name]
		if v != "" {
			*override = strings.TrimRight(v, "/")
		}
		if *override == "" && name != "api_base" {
			return nil, fmt.Errorf("oauth %s: %s is required", platform, name)
		}
	}
	// An ID token vouches for the user only when it comes over TLS (or
	// from this host): decided once, with the token URL in force.
	if profile.identifyIDToken != nil && !trustedChannel(profile.TokenURL) {
		profile.identifyIDToken = nil
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = profile.DefaultScopes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Transport == nil {
		cfg.Transport = sharedTransport()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Provider{profile: profile, cfg: cfg, now: cfg.Now}
	p.client = &http.Client{
		Timeout:   cfg.Timeout,
		Transport: &guard{next: cfg.Transport, platform: profile.Name, parse: profile.errors},
		// A provider API never legitimately redirects an API call.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	p.oauth = &oauth2.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret.Reveal(),
		RedirectURL:  cfg.RedirectURL,
		Endpoint:     oauth2.Endpoint{AuthURL: profile.AuthURL, TokenURL: profile.TokenURL, AuthStyle: profile.AuthStyle},
	}
	if profile.ScopeSeparator == " " {
		p.oauth.Scopes = cfg.Scopes
	}
	return p, nil
}

// validName is what a provider's own name may be: it is a URL path
// segment and a label value.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// APIBase is the platform's API base URL (a sandbox's, when configured):
// where the egress proxy sends the app's API calls.
func (p *Provider) APIBase() string { return p.profile.APIBase }

// Name is the platform name.
func (p *Provider) Name() string { return p.profile.Name }

// RedirectURL is the callback this provider sends the browser back to.
func (p *Provider) RedirectURL() string { return p.cfg.RedirectURL }

// UsesPKCE reports whether flows send a code challenge.
func (p *Provider) UsesPKCE() bool { return p.profile.PKCE != PKCENever }

// Renewal is how the platform renews tokens without the user.
func (p *Provider) Renewal() Renewal { return p.profile.Renewal }

// MinRefreshAge is how old a token must be before the platform renews it.
func (p *Provider) MinRefreshAge() time.Duration { return p.profile.MinRefreshAge }

// CanRevoke reports whether the platform has a revoke endpoint.
func (p *Provider) CanRevoke() bool { return p.profile.revoke != nil }

// BeginOption adjusts Begin.
type BeginOption func(*beginOptions)

type beginOptions struct{ state secret.Value }

// WithState uses state instead of a fresh random one (credgate issues
// self-authenticating states; see vault.Keyring.StateMACKey).
func WithState(state secret.Value) BeginOption { return func(o *beginOptions) { o.state = state } }

// RandomToken returns n random bytes, URL-safe base64 without padding.
func RandomToken(n int) secret.Value {
	b := make([]byte, n)
	rand.Read(b)
	return secret.New(base64.RawURLEncoding.EncodeToString(b))
}

// Begin starts a flow: a fresh state (32 random bytes, URL-safe), a PKCE
// verifier when the platform uses PKCE, a browser-binding secret, and the
// authorize URL carrying them.
func (p *Provider) Begin(opts ...BeginOption) (Start, error) {
	var o beginOptions
	for _, opt := range opts {
		opt(&o)
	}
	s := Start{State: o.state, BrowserBinding: RandomToken(32)}
	if s.State.IsZero() {
		s.State = RandomToken(32)
	}
	var params []oauth2.AuthCodeOption
	if p.profile.ScopeSeparator != " " && len(p.cfg.Scopes) > 0 {
		params = append(params, oauth2.SetAuthURLParam("scope", strings.Join(p.cfg.Scopes, p.profile.ScopeSeparator)))
	}
	if p.UsesPKCE() {
		s.Verifier = secret.New(oauth2.GenerateVerifier())
		params = append(params, oauth2.S256ChallengeOption(s.Verifier.Reveal()))
	}
	s.URL = p.oauth.AuthCodeURL(s.State.Reveal(), params...)
	return s, nil
}

// CompleteOption adjusts Complete.
type CompleteOption func(*completeOptions)

type completeOptions struct{ redirectURL string }

// WithRedirectURL sends the redirect URI the flow was started with, which
// the platform requires to match exactly; it may differ from the current
// configuration when redirect_url changed while the flow was in flight.
func WithRedirectURL(u string) CompleteOption { return func(o *completeOptions) { o.redirectURL = u } }

// Complete exchanges an authorization code for a token set, applies the
// platform's post-exchange step (Facebook and Instagram long-lived tokens)
// and looks up the account's identity.
func (p *Provider) Complete(ctx context.Context, code, verifier secret.Value, opts ...CompleteOption) (TokenSet, error) {
	o := completeOptions{redirectURL: p.cfg.RedirectURL}
	for _, opt := range opts {
		opt(&o)
	}
	if o.redirectURL == "" {
		o.redirectURL = p.cfg.RedirectURL
	}
	raw := strings.TrimSpace(code.Reveal())
	// Facebook appends #_=_ and Instagram #_ to the redirect; a client
	// that copies the whole fragment-bearing value must not send it.
	raw = strings.TrimSuffix(strings.TrimSuffix(raw, "#_=_"), "#_")
	if raw == "" {
		return TokenSet{}, newError(p.profile.Name, "exchange", CodeInvalidRequest, 0, "no authorization code")
	}
	if p.profile.PKCE == PKCERequired && verifier.IsZero() {
		return TokenSet{}, newError(p.profile.Name, "exchange", CodeInvalidRequest, 0, "no PKCE verifier for a platform that requires PKCE")
	}
	t, err := p.exchange(ctx, raw, verifier, o.redirectURL)
	if err != nil {
		return TokenSet{}, err
	}
	// The scopes the user granted, where the token response leaves them
	// out: what the consent screen asked for may not be what was granted.
	if len(t.Scopes) == 0 && p.profile.grantedScopes != nil {
		if t.Scopes, err = p.profile.grantedScopes(p.context(ctx, "permissions"), p, t.AccessToken); err != nil {
			return TokenSet{}, p.asError("permissions", err)
		}
	}
	if p.profile.identifyIDToken != nil && !t.idToken.IsZero() {
		if id, ok := p.profile.identifyIDToken(p, t.idToken.Reveal()); ok {
			t.PlatformUserID, t.Username = id.ID, id.Username
			return t, nil
		}
	}
	if p.profile.identify != nil {
		pctx, span := p.startSpan(ctx, "credgate.oauth.profile")
		id, err := p.Identify(pctx, t.AccessToken)
		endSpan(span, err)
		if err != nil {
			return TokenSet{}, err
		}
		if id.ID == "" {
			return TokenSet{}, newError(p.profile.Name, "profile", CodeInvalidResponse, 200, "profile without an id")
		}
		t.PlatformUserID, t.Username = id.ID, id.Username
	}
	return t, nil
}

// exchange redeems the code and applies the long-lived exchange, in one
// credgate.oauth.exchange span.
func (p *Provider) exchange(ctx context.Context, code string, verifier secret.Value, redirectURL string) (t TokenSet, err error) {
	ctx, span := p.startSpan(ctx, "credgate.oauth.exchange")
	defer func() { endSpan(span, err) }()
	ctx = p.context(ctx, "exchange")
	if p.profile.exchange != nil {
		t, err = p.profile.exchange(ctx, p, code, verifier, redirectURL)
	} else {
		t, err = p.standardExchange(ctx, code, verifier, redirectURL)
	}
	if err != nil {
		return TokenSet{}, p.asError("exchange", err)
	}
	if p.profile.afterExchange != nil {
		if t, err = p.profile.afterExchange(p.context(ctx, "long_lived_exchange"), p, t); err != nil {
			return TokenSet{}, p.asError("long_lived_exchange", err)
		}
	}
	return t, nil
}

// startSpan starts a child span when a tracer is configured.
func (p *Provider) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	if p.cfg.Tracer == nil {
		return ctx, trace.SpanFromContext(context.Background()) // a no-op span
	}
	return p.cfg.Tracer.Start(ctx, name, trace.WithAttributes(attribute.String("credgate.platform", p.profile.Name)))
}

// endSpan ends span with the stable code of err as error.type: never a
// message, which could echo the platform's answer.
func endSpan(span trace.Span, err error) {
	if err != nil {
		code := string(CodeOf(err))
		span.SetAttributes(attribute.String("credgate.outcome", "failure"), attribute.String("error.type", code))
		span.SetStatus(codes.Error, code)
	} else {
		span.SetAttributes(attribute.String("credgate.outcome", "success"))
	}
	span.End()
}

// Refresh renews a token set by the platform's strategy. A platform or
// token that cannot be renewed without the user yields needs_reauth.
func (p *Provider) Refresh(ctx context.Context, t TokenSet) (TokenSet, error) {
	if p.profile.refresh == nil {
		return TokenSet{}, newError(p.profile.Name, "refresh", CodeNeedsReauth, 0, "the platform issues no refresh token")
	}
	out, err := p.profile.refresh(p.context(ctx, "refresh"), p, t)
	if err != nil {
		return TokenSet{}, p.asError("refresh", err)
	}
	out.PlatformUserID, out.Username = t.PlatformUserID, t.Username
	if out.Scopes == nil {
		out.Scopes = t.Scopes
	}
	return out, nil
}

// Revoke withdraws the token at the platform where it supports that, and
// returns ErrRevokeUnsupported (code "unsupported") where it does not.
func (p *Provider) Revoke(ctx context.Context, t TokenSet) error {
	if p.profile.revoke == nil {
		return ErrRevokeUnsupported.with(func(e *Error) { e.Platform = p.profile.Name })
	}
	if err := p.profile.revoke(p.context(ctx, "revoke"), p, t); err != nil {
		return p.asError("revoke", err)
	}
	return nil
}

// Identify looks up the account behind an access token.
func (p *Provider) Identify(ctx context.Context, access secret.Value) (Identity, error) {
	if p.profile.identify == nil {
		return Identity{}, newError(p.profile.Name, "profile", CodeUnsupported, 0, "no profile endpoint configured")
	}
	id, err := p.profile.identify(p.context(ctx, "profile"), p, access)
	if err != nil {
		return Identity{}, p.asError("profile", err)
	}
	return id, nil
}

// context carries the HTTP client for x/oauth2 and the operation name for
// the guard's errors.
func (p *Provider) context(ctx context.Context, op string) context.Context {
	return context.WithValue(withOp(ctx, op), oauth2.HTTPClient, p.client)
}

func (p *Provider) standardExchange(ctx context.Context, code string, verifier secret.Value, redirectURL string) (TokenSet, error) {
	opts := []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("redirect_uri", redirectURL)}
	// LinkedIn answers 401 when code_verifier is present, so a platform
	// without PKCE never sends it, whatever the caller passed.
	if p.UsesPKCE() && !verifier.IsZero() {
		opts = append(opts, oauth2.VerifierOption(verifier.Reveal()))
	}
	tok, err := p.oauth.Exchange(ctx, code, opts...)
	if err != nil {
		return TokenSet{}, err
	}
	return p.fromOAuth2(tok)
}

// refreshToken runs the RFC 6749 refresh_token grant. x/oauth2 keeps the
// old refresh token when the response has none, and returns the new one
// when the platform rotates it (Twitter): the caller must persist it.
func refreshToken(ctx context.Context, p *Provider, t TokenSet) (TokenSet, error) {
	if t.RefreshToken.IsZero() {
		return TokenSet{}, newError(p.profile.Name, "refresh", CodeNeedsReauth, 0, "no refresh token")
	}
	src := p.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: t.RefreshToken.Reveal(), Expiry: time.Unix(1, 0)})
	tok, err := src.Token()
	if err != nil {
		return TokenSet{}, err
	}
	return p.fromOAuth2(tok)
}

func (p *Provider) fromOAuth2(tok *oauth2.Token) (TokenSet, error) {
	t := TokenSet{
		AccessToken:  secret.New(tok.AccessToken),
		RefreshToken: secret.New(tok.RefreshToken),
		TokenType:    tok.TokenType,
		IssuedAt:     p.now(),
	}
	if scope, ok := tok.Extra("scope").(string); ok && scope != "" {
		t.Scopes = splitScopes(scope)
	}
	if idToken, ok := tok.Extra("id_token").(string); ok {
		t.idToken = secret.New(idToken)
	}
	var err error
	t.Expiry, err = p.expiry(tok.ExpiresIn, !tok.Expiry.IsZero())
	return t, err
}

// expiry turns expires_in seconds into a time, distrusting negative and
// implausible values.
func (p *Provider) expiry(seconds int64, present bool) (time.Time, error) {
	now := p.now()
	switch {
	case present && seconds < 0:
		return time.Time{}, newError(p.profile.Name, "", CodeInvalidResponse, 200, "negative expires_in")
	case !present || seconds == 0 || seconds > int64(plausibleLifetime/time.Second):
		if p.profile.DefaultLifetime > 0 {
			return now.Add(p.profile.DefaultLifetime), nil
		}
		return time.Time{}, nil
	}
	return now.Add(time.Duration(seconds) * time.Second), nil
}

func splitScopes(s string) []string {
	return slices.DeleteFunc(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' }), func(x string) bool { return x == "" })
}

// callJSON performs a request through the guard and decodes a clean 2xx
// JSON body into out (numbers kept exact).
func (p *Provider) callJSON(ctx context.Context, method, rawURL string, form url.Values, bearer secret.Value, out any) error {
	var body io.Reader
	if form != nil && method != http.MethodGet && method != http.MethodDelete {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		return newError(p.profile.Name, opOf(ctx), CodeInvalidRequest, 0, "bad endpoint URL")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	if !bearer.IsZero() {
		req.Header.Set("Authorization", "Bearer "+bearer.Reveal())
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return stripURL(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body) // the guard already bounded and buffered it
	if out == nil || len(bytes.TrimSpace(raw)) == 0 {
		// The guard only lets an empty 2xx through for a revoke.
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return newError(p.profile.Name, opOf(ctx), CodeInvalidResponse, resp.StatusCode, "malformed JSON response")
	}
	return nil
}

// postFormBasic posts form with the client's credentials in HTTP Basic
// (client_secret_basic; RFC 6749 §2.3.1 form-encodes both parts first)
// and reads nothing back: the revocations.
func (p *Provider) postFormBasic(ctx context.Context, rawURL string, form url.Values) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, strings.NewReader(form.Encode()))
	if err != nil {
		return newError(p.profile.Name, opOf(ctx), CodeInvalidRequest, 0, "bad endpoint URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(p.cfg.ClientSecret.Reveal()))
	resp, err := p.client.Do(req)
	if err != nil {
		return stripURL(err)
	}
	resp.Body.Close()
	return nil
}

// tokenResponse is a token endpoint answer decoded by hand (the
// non-standard exchanges).
type tokenResponse struct {
	AccessToken string      `json:"access_token"`
	TokenType   string      `json:"token_type"`
	ExpiresIn   json.Number `json:"expires_in"`
	UserID      json.Number `json:"user_id"`
	Permissions any         `json:"permissions"`
	Data        []struct {
		AccessToken string      `json:"access_token"`
		UserID      json.Number `json:"user_id"`
		Permissions any         `json:"permissions"`
	} `json:"data"`
}

func (p *Provider) fromResponse(r tokenResponse) (TokenSet, error) {
	if r.AccessToken == "" {
		return TokenSet{}, newError(p.profile.Name, "", CodeInvalidResponse, 200, "no access_token in the response")
	}
	t := TokenSet{AccessToken: secret.New(r.AccessToken), TokenType: r.TokenType, IssuedAt: p.now()}
	var seconds int64
	present := r.ExpiresIn != ""
	if present {
		n, err := r.ExpiresIn.Int64()
		if err != nil {
			return TokenSet{}, newError(p.profile.Name, "", CodeInvalidResponse, 200, "expires_in is not a whole number")
		}
		seconds = n
	}
	var err error
	t.Expiry, err = p.expiry(seconds, present)
	return t, err
}
