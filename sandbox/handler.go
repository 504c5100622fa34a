package sandbox

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ServeHTTP routes {base}/<platform>/<real path> and {base}/_sandbox/….
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" && r.Method == http.MethodGet {
		s.serveLanding(w)
		return
	}
	platform, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	rest = "/" + rest
	if platform == "_sandbox" {
		s.serveAdmin(w, r, rest)
		return
	}
	endpoint, handle := s.route(platform, r.Method, rest)
	if handle == nil {
		if post := s.apiRoute(platform, r.Method, rest); post != nil {
			endpoint, handle = EndpointAPI, post
		}
	}
	if handle == nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	// Facebook's long-lived exchange shares the token URL; faults for it
	// are configured under its own endpoint name.
	if platform == "facebook" && endpoint == EndpointToken && r.FormValue("grant_type") == "fb_exchange_token" {
		endpoint = EndpointExchange
	}
	if s.injectFault(w, r, platform, endpoint) {
		return
	}
	handle(w, r)
}

type handlerFunc = func(http.ResponseWriter, *http.Request)

// route maps a platform's real paths to endpoints.
func (s *Server) route(platform, method, path string) (string, handlerFunc) {
	authorize := func(w http.ResponseWriter, r *http.Request) { s.authorize(w, r, platform) }
	switch platform + " " + path {
	case "twitter /i/oauth2/authorize", "linkedin /oauth/v2/authorization",
		"facebook /v22.0/dialog/oauth", "instagram /oauth/authorize":
		return EndpointAuthorize, authorize
	case "twitter /2/oauth2/token":
		return EndpointToken, s.twitterToken
	case "twitter /2/oauth2/revoke":
		return EndpointRevoke, s.twitterRevoke
	case "twitter /2/users/me":
		return EndpointProfile, s.twitterMe
	case "linkedin /oauth/v2/accessToken":
		return EndpointToken, s.linkedinToken
	case "linkedin /v2/userinfo":
		return EndpointProfile, s.linkedinUserinfo
	case "facebook /v22.0/oauth/access_token":
		return EndpointToken, s.facebookToken
	case "facebook /me", "facebook /v22.0/me":
		return EndpointProfile, s.facebookMe
	case "instagram /oauth/access_token":
		return EndpointToken, s.instagramToken
	case "instagram /access_token":
		return EndpointExchange, s.instagramExchange
	case "instagram /refresh_access_token":
		return EndpointRefresh, s.instagramRefresh
	case "instagram /me", "instagram /v22.0/me":
		return EndpointProfile, s.instagramMe
	}
	if platform == "facebook" && method == http.MethodDelete && strings.HasSuffix(path, "/permissions") {
		return EndpointRevoke, s.facebookRevoke
	}
	if platform == "facebook" && method == http.MethodGet && strings.HasSuffix(path, "/permissions") {
		return EndpointProfile, s.facebookPermissions
	}
	return "", nil
}

// injectFault applies the endpoint's fault, if any, and reports whether it
// answered the request.
func (s *Server) injectFault(w http.ResponseWriter, r *http.Request, platform, endpoint string) bool {
	f := s.fault(platform, endpoint)
	if f.Latency > 0 {
		// Read the form first: only once the body is read does the server
		// notice a client that hangs up. A client that gave up waiting is
		// not served, as behind a platform's gateway timeout; otherwise a
		// refresh would rotate a token that nobody receives.
		r.ParseForm()
		select {
		case <-time.After(time.Duration(f.Latency)):
		case <-r.Context().Done():
			return true
		}
		if r.Context().Err() != nil {
			return true
		}
	}
	switch {
	case f.HTML502:
		s.count(platform, "fault_html_502")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"))
		return true
	case f.ErrorRate > 0 && rand.Float64() < f.ErrorRate:
		s.count(platform, "fault_error_rate")
		platformError(w, platform, http.StatusServiceUnavailable, "temporarily_unavailable", "The service is temporarily unavailable", 2, 0)
		return true
	case f.ErrorIn200:
		s.count(platform, "fault_error_in_200")
		platformError(w, platform, http.StatusOK, "invalid_request", "Something went wrong", 1, 0)
		return true
	case f.InvalidGrant && (endpoint == EndpointToken || endpoint == EndpointExchange || endpoint == EndpointRefresh):
		s.count(platform, "fault_invalid_grant")
		invalidGrant(w, platform)
		return true
	}
	return false
}

func (s *Server) count(platform, reason string) {
	s.mu.Lock()
	s.reject(platform, reason)
	s.mu.Unlock()
}

// platformError writes an error in the platform's own shape.
func platformError(w http.ResponseWriter, platform string, status int, rfcCode, message string, graphCode, subcode int) {
	switch platform {
	case "facebook":
		e := map[string]any{"message": message, "type": "OAuthException", "code": graphCode, "fbtrace_id": randomString(8)}
		if subcode != 0 {
			e["error_subcode"] = subcode
		}
		writeJSON(w, status, map[string]any{"error": e})
	case "instagram":
		writeJSON(w, status, map[string]any{"error_type": "OAuthException", "code": status, "error_message": message})
	default:
		writeJSON(w, status, map[string]any{"error": rfcCode, "error_description": message})
	}
}

// invalidGrant is each platform's answer to a bad, used or expired code.
func invalidGrant(w http.ResponseWriter, platform string) {
	switch platform {
	case "twitter":
		// Twitter says invalid_request, not invalid_grant.
		platformError(w, platform, http.StatusBadRequest, "invalid_request", "Value passed for the token was invalid.", 0, 0)
	case "linkedin":
		platformError(w, platform, http.StatusBadRequest, "invalid_request", "Unable to retrieve access token: appid/redirect uri/code verifier does not match authorization code. Or authorization code expired. Or external member binding exists", 0, 0)
	case "facebook":
		platformError(w, platform, http.StatusBadRequest, "", "This authorization code has been used.", 100, 36009)
	default:
		platformError(w, platform, http.StatusBadRequest, "", "Matching code was not found or was already used", 0, 0)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// app finds the client, checking the secret; call with s.mu held.
func (s *Server) app(platform, clientID, secret string) *App {
	a := s.apps[platform+"/"+clientID]
	if a == nil || subtle.ConstantTimeCompare([]byte(a.ClientSecret), []byte(secret)) != 1 {
		return nil
	}
	return a
}

var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Platform}} sandbox — authorize {{.ClientID}}</title>
<style>body{font-family:sans-serif;max-width:32rem;margin:3rem auto}button{font-size:1rem;margin-right:1rem}</style></head>
<body><h1>{{.Platform}} (credgate sandbox)</h1>
<p><strong>{{.ClientID}}</strong> asks for: <code>{{.Scope}}</code></p>
<form method="post">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">
{{end}}<label>Sign in as <input name="sandbox_user" value="{{.User}}"></label>
<p><button name="decision" value="approve" id="approve">Authorize app</button>
<button name="decision" value="deny" id="deny">Cancel</button></p>
</form></body></html>`))

// authorize is every platform's authorize endpoint: GET shows the consent
// page (or decides at once with auto_approve), POST takes the decision.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, platform string) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	q := r.Form
	clientID, redirect, state := q.Get("client_id"), q.Get("redirect_uri"), q.Get("state")

	s.mu.Lock()
	a := s.apps[platform+"/"+clientID]
	redirectOK := a != nil && contains(a.RedirectURIs, redirect)
	if a == nil {
		s.reject(platform, "unknown_client")
	} else if !redirectOK {
		s.reject(platform, "redirect_uri_mismatch")
	}
	s.mu.Unlock()
	// Without a known client and an exactly registered redirect URI the
	// provider cannot redirect anywhere: it shows an error page.
	if a == nil {
		http.Error(w, "Invalid client_id", http.StatusBadRequest)
		return
	}
	if !redirectOK {
		http.Error(w, "The redirect_uri does not match the registered value", http.StatusBadRequest)
		return
	}
	fail := func(reason, errCode, desc string) {
		s.count(platform, reason)
		redirectBack(w, r, platform, redirect, url.Values{"error": {errCode}, "error_description": {desc}, "state": {state}})
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "unsupported_response_type", "response_type must be code")
		return
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case platform == "twitter" && (challenge == "" || method != "S256"):
		fail("pkce_required", "invalid_request", "PKCE with code_challenge_method=S256 is required")
		return
	case challenge != "" && method != "S256":
		fail("pkce_method", "invalid_request", "code_challenge_method must be S256")
		return
	case platform == "twitter" && len(state) > 500:
		fail("state_too_long", "invalid_request", "state must be at most 500 characters")
		return
	case state == "" && platform != "instagram":
		fail("missing_state", "invalid_request", "state is required")
		return
	}

	decision := q.Get("decision")
	if r.Method == http.MethodGet {
		switch {
		case s.autoApprove, q.Get("sandbox_decision") == "approve":
			decision = "approve"
		case q.Get("sandbox_decision") == "deny":
			decision = "deny"
		default:
			params := map[string]string{}
			for k := range q {
				params[k] = q.Get(k)
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			consentPage.Execute(w, map[string]any{"Platform": platform, "ClientID": clientID, "Scope": q.Get("scope"),
				"Params": params, "User": signedInUser(r)})
			return
		}
	}
	if decision != "approve" {
		s.count(platform, "access_denied")
		v := url.Values{"error": {"access_denied"}, "state": {state}}
		switch platform {
		case "linkedin":
			v.Set("error", "user_cancelled_authorize")
			v.Set("error_description", "The user cancelled the authorization")
		case "facebook":
			v.Set("error_code", "200")
			v.Set("error_reason", "user_denied")
			v.Set("error_description", "Permissions error")
		case "instagram":
			v.Set("error_reason", "user_denied")
			v.Set("error_description", "The user denied your request.")
		}
		redirectBack(w, r, platform, redirect, v)
		return
	}
	c := randomString(24)
	s.mu.Lock()
	now := s.clock.Now()
	s.codes[c] = &code{app: a, redirect: redirect, challenge: challenge, scopes: splitScope(q.Get("scope")),
		user: userFor(platform, cmp.Or(q.Get("sandbox_user"), signedInUser(r))), issued: now}
	s.codeLife.remember(c, now.Add(codeMemory))
	forget(&s.codeLife, s.codes, now)
	s.stats[platform].CodesIssued++
	s.mu.Unlock()
	redirectBack(w, r, platform, redirect, url.Values{"code": {c}, "state": {state}})
}

// UserCookie names the sandbox's stand-in for a platform session: the
// person signed in at the platform, whose account a consent grants
// (default "sandbox-user"). The consent form's sandbox_user field, when
// sent, wins. The demo page sets it at sign-in, so that each demo user
// connects accounts of their own (cookies are per host, not per port:
// the app on localhost:8080 can set one the sandbox on localhost:9090
// reads).
const UserCookie = "sandbox_user"

// signedInUser is the platform user UserCookie names, else "sandbox-user".
func signedInUser(r *http.Request) string {
	if c, err := r.Cookie(UserCookie); err == nil && c.Value != "" {
		return c.Value
	}
	return "sandbox-user"
}

// redirectBack sends the browser to the app, with Facebook's #_=_ and
// Instagram's #_ fragments.
func redirectBack(w http.ResponseWriter, r *http.Request, platform, redirect string, v url.Values) {
	if v.Get("state") == "" {
		v.Del("state")
	}
	target := redirect
	if strings.Contains(target, "?") {
		target += "&" + v.Encode()
	} else {
		target += "?" + v.Encode()
	}
	switch platform {
	case "facebook":
		target += "#_=_"
	case "instagram":
		target += "#_"
	}
	http.Redirect(w, r, target, http.StatusFound)
}

// redeem checks and spends an authorization code; call with s.mu held.
// It returns the code or the rejection reason.
func (s *Server) redeem(platform string, a *App, value, redirect, verifier string) (*code, string) {
	c := s.codes[value]
	switch {
	case c == nil:
		return nil, "unknown_code"
	case c.app != a:
		return nil, "code_for_another_client"
	case c.redeemed:
		return nil, "reused_code"
	case s.clock.Now().Sub(c.issued) > CodeTTL:
		return nil, "expired_code"
	case c.redirect != redirect:
		return nil, "redirect_uri_mismatch"
	case c.challenge != "" && verifier == "":
		return nil, "missing_code_verifier"
	case c.challenge != "" && !verifierMatches(c.challenge, verifier):
		return nil, "wrong_code_verifier"
	}
	c.redeemed = true
	s.stats[platform].CodesRedeemed++
	return c, ""
}

func verifierMatches(challenge, verifier string) bool {
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// issue mints a token; call with s.mu held.
func (s *Server) issue(a *App, user identity, scopes []string, ttl time.Duration, long, refresh bool, family string) string {
	v := randomString(32)
	now := s.clock.Now()
	s.tokens[v] = &token{app: a, user: user, scopes: scopes, issued: now, expires: now.Add(ttl), long: long, refresh: refresh, family: family}
	s.tokenLife.remember(v, now.Add(ttl))
	forget(&s.tokenLife, s.tokens, now)
	if !refresh {
		s.stats[a.Platform].TokensIssued++
	}
	return v
}

// bearer finds a live access token from the Authorization header or the
// access_token parameter; call with s.mu held.
func (s *Server) bearer(r *http.Request, platform string) *token {
	v := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if v == "" || v == r.Header.Get("Authorization") {
		v = r.URL.Query().Get("access_token")
	}
	t := s.tokens[v]
	if t == nil || t.refresh || t.revoked || t.app.Platform != platform || !s.clock.Now().Before(t.expires) || s.families[t.family] {
		return nil
	}
	return t
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func splitScope(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
}
