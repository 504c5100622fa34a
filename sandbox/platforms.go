package sandbox

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Token lifetimes as the platforms document them.
const (
	twitterAccessTTL   = 2 * time.Hour
	twitterRefreshTTL  = 180 * 24 * time.Hour
	linkedinAccessTTL  = 60 * 24 * time.Hour
	linkedinRefreshTTL = 365 * 24 * time.Hour
	shortLivedTTL      = time.Hour
	longLivedTTL       = 60 * 24 * time.Hour
	// instagramMinRefreshAge: ig_refresh_token only takes tokens at least
	// a day old.
	instagramMinRefreshAge = 24 * time.Hour
)

// --- Twitter/X -----------------------------------------------------------

func (s *Server) twitterToken(w http.ResponseWriter, r *http.Request) {
	const p = "twitter"
	if !postForm(w, r) {
		return
	}
	// Confidential clients must authenticate with HTTP Basic; credentials
	// in the body are not accepted.
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(p, id, secret)
	if !ok || a == nil {
		reason := "missing_basic_auth"
		if ok {
			reason = "bad_client_credentials"
		}
		s.reject(p, reason)
		platformError(w, p, http.StatusUnauthorized, "unauthorized_client", "Missing valid authorization header", 0, 0)
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		c, reason := s.redeem(p, a, r.PostForm.Get("code"), r.PostForm.Get("redirect_uri"), r.PostForm.Get("code_verifier"))
		if reason == "" && c.challenge == "" {
			reason = "pkce_required"
		}
		if reason != "" {
			s.reject(p, reason)
			invalidGrant(w, p)
			return
		}
		s.twitterPair(w, a, c.user, c.scopes, randomString(8))
	case "refresh_token":
		old := s.tokens[r.PostForm.Get("refresh_token")]
		switch {
		case old == nil || !old.refresh || old.app != a || s.families[old.family] || !s.clock.Now().Before(old.expires):
			s.reject(p, "bad_refresh_token")
			invalidGrant(w, p)
			return
		case old.replaced:
			// A rotated token came back: someone holds a copy. Kill the
			// whole family, the current tokens included.
			s.families[old.family] = true
			s.stats[p].RefreshReuse++
			s.reject(p, "refresh_token_reuse")
			invalidGrant(w, p)
			return
		}
		old.replaced = true
		s.stats[p].Refreshes++
		s.twitterPair(w, a, old.user, old.scopes, old.family)
	default:
		s.reject(p, "unsupported_grant_type")
		platformError(w, p, http.StatusBadRequest, "unsupported_grant_type", "grant_type is not supported", 0, 0)
	}
}

// twitterPair issues an access token and, with offline.access, a refresh
// token of the same family; call with s.mu held.
func (s *Server) twitterPair(w http.ResponseWriter, a *App, user identity, scopes []string, family string) {
	resp := map[string]any{
		"token_type": "bearer", "expires_in": int(s.accessTTL("twitter").Seconds()),
		"access_token": s.issue(a, user, scopes, s.accessTTL("twitter"), false, false, family),
		"scope":        strings.Join(scopes, " "),
	}
	if contains(scopes, "offline.access") {
		resp["refresh_token"] = s.issue(a, user, scopes, twitterRefreshTTL, false, true, family)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) twitterRevoke(w http.ResponseWriter, r *http.Request) {
	const p = "twitter"
	r.ParseForm()
	id, secret, _ := r.BasicAuth()
	id, _ = url.QueryUnescape(id)
	secret, _ = url.QueryUnescape(secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(p, id, secret)
	if a == nil {
		s.reject(p, "bad_client_credentials")
		platformError(w, p, http.StatusUnauthorized, "unauthorized_client", "Missing valid authorization header", 0, 0)
		return
	}
	if t := s.tokens[r.PostForm.Get("token")]; t != nil && t.app == a {
		// Revoking either token ends the grant.
		s.families[t.family] = true
		t.revoked = true
		s.stats[p].Revocations++
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": true})
}

func (s *Server) twitterMe(w http.ResponseWriter, r *http.Request) {
	s.serveProfile(w, r, "twitter", func(w http.ResponseWriter) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})
	}, func(t *token) any {
		return map[string]any{"data": map[string]any{"id": t.user.ID, "name": t.user.Name, "username": t.user.Name}}
	})
}

// --- LinkedIn ------------------------------------------------------------

func (s *Server) linkedinToken(w http.ResponseWriter, r *http.Request) {
	const p = "linkedin"
	if !postForm(w, r) {
		return
	}
	f := r.PostForm
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(p, f.Get("client_id"), f.Get("client_secret"))
	switch {
	case a == nil:
		s.reject(p, "bad_client_credentials")
		platformError(w, p, http.StatusUnauthorized, "invalid_client", "Client authentication failed", 0, 0)
		return
	case f.Has("code_verifier"):
		// LinkedIn's web flow does not do PKCE and rejects the parameter.
		s.reject(p, "code_verifier_sent")
		platformError(w, p, http.StatusUnauthorized, "invalid_client", "Client authentication failed", 0, 0)
		return
	}
	var user identity
	var scopes []string
	switch f.Get("grant_type") {
	case "authorization_code":
		c, reason := s.redeem(p, a, f.Get("code"), f.Get("redirect_uri"), "")
		if reason != "" {
			s.reject(p, reason)
			invalidGrant(w, p)
			return
		}
		user, scopes = c.user, c.scopes
	case "refresh_token":
		old := s.tokens[f.Get("refresh_token")]
		if !a.RefreshTokens || old == nil || !old.refresh || old.app != a || !s.clock.Now().Before(old.expires) {
			s.reject(p, "bad_refresh_token")
			platformError(w, p, http.StatusBadRequest, "invalid_grant", "The provided authorization grant or refresh token is invalid, expired or revoked.", 0, 0)
			return
		}
		s.stats[p].Refreshes++
		user, scopes = old.user, old.scopes
	default:
		s.reject(p, "unsupported_grant_type")
		platformError(w, p, http.StatusBadRequest, "unsupported_grant_type", "grant_type is not supported", 0, 0)
		return
	}
	resp := map[string]any{
		"access_token": s.issue(a, user, scopes, s.accessTTL("linkedin"), false, false, ""),
		"expires_in":   int(s.accessTTL("linkedin").Seconds()), "scope": strings.Join(scopes, ","), "token_type": "Bearer",
	}
	// Refresh tokens only for apps LinkedIn approved for them.
	if a.RefreshTokens {
		resp["refresh_token"] = s.issue(a, user, scopes, linkedinRefreshTTL, false, true, "")
		resp["refresh_token_expires_in"] = int(linkedinRefreshTTL.Seconds())
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) linkedinUserinfo(w http.ResponseWriter, r *http.Request) {
	s.serveProfile(w, r, "linkedin", func(w http.ResponseWriter) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"status": 401, "serviceErrorCode": 65600, "code": "INVALID_ACCESS_TOKEN", "message": "Invalid access token"})
	}, func(t *token) any {
		return map[string]any{"sub": t.user.ID, "name": t.user.Name, "email_verified": true,
			"locale": map[string]string{"country": "US", "language": "en"}}
	})
}

// --- Facebook ------------------------------------------------------------

func (s *Server) facebookToken(w http.ResponseWriter, r *http.Request) {
	const p = "facebook"
	r.ParseForm() // Graph takes the parameters in the query or the body
	f := r.Form
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(p, f.Get("client_id"), f.Get("client_secret"))
	if a == nil {
		s.reject(p, "bad_client_credentials")
		platformError(w, p, http.StatusBadRequest, "", "Error validating client secret.", 1, 0)
		return
	}
	if f.Get("grant_type") == "fb_exchange_token" {
		old := s.tokens[f.Get("fb_exchange_token")]
		if old == nil || old.refresh || old.revoked || old.app != a || !s.clock.Now().Before(old.expires) {
			s.reject(p, "bad_exchange_token")
			platformError(w, p, http.StatusBadRequest, "", "Error validating access token: Session has expired.", 190, 463)
			return
		}
		s.stats[p].Refreshes++
		writeJSON(w, http.StatusOK, map[string]any{"access_token": s.issue(a, old.user, old.scopes, longLivedTTL, true, false, ""),
			"token_type": "bearer", "expires_in": int(longLivedTTL.Seconds())})
		return
	}
	c, reason := s.redeem(p, a, f.Get("code"), f.Get("redirect_uri"), f.Get("code_verifier"))
	if reason != "" {
		s.reject(p, reason)
		switch reason {
		case "expired_code":
			platformError(w, p, http.StatusBadRequest, "", "This authorization code has expired.", 100, 36007)
		case "redirect_uri_mismatch":
			platformError(w, p, http.StatusBadRequest, "", "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request", 100, 36008)
		default:
			invalidGrant(w, p)
		}
		return
	}
	// The code yields a short-lived token; the client swaps it for a
	// long-lived one with fb_exchange_token. There is no refresh token.
	writeJSON(w, http.StatusOK, map[string]any{"access_token": s.issue(a, c.user, c.scopes, shortLivedTTL, false, false, ""),
		"token_type": "bearer", "expires_in": int(shortLivedTTL.Seconds())})
}

func (s *Server) facebookMe(w http.ResponseWriter, r *http.Request) {
	s.serveProfile(w, r, "facebook", func(w http.ResponseWriter) {
		platformError(w, "facebook", http.StatusBadRequest, "", "Invalid OAuth access token - Cannot parse access token", 190, 0)
	}, func(t *token) any { return map[string]any{"id": t.user.ID, "name": t.user.Name} })
}

// facebookPermissions is Graph's GET /{user-id}/permissions (or
// /me/permissions): the permissions the user granted the app, each
// {"permission", "status"}. Graph's token responses carry no scope, so
// this is where a client learns what the consent granted.
func (s *Server) facebookPermissions(w http.ResponseWriter, r *http.Request) {
	who := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/facebook"), "/v22.0"), "/permissions")
	who = strings.Trim(who, "/")
	s.serveProfile(w, r, "facebook", func(w http.ResponseWriter) {
		platformError(w, "facebook", http.StatusBadRequest, "", "Invalid OAuth access token - Cannot parse access token", 190, 0)
	}, func(t *token) any {
		if who != "me" && who != t.user.ID {
			return map[string]any{"data": []any{}}
		}
		data := []any{}
		for _, scope := range t.scopes {
			data = append(data, map[string]any{"permission": scope, "status": "granted"})
		}
		return map[string]any{"data": data}
	})
}

func (s *Server) facebookRevoke(w http.ResponseWriter, r *http.Request) {
	userID := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/facebook"), "/v22.0"), "/permissions")
	userID = strings.Trim(userID, "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.bearer(r, "facebook")
	if t == nil || t.user.ID != userID {
		s.reject("facebook", "bad_access_token")
		platformError(w, "facebook", http.StatusBadRequest, "", "Invalid OAuth access token.", 190, 0)
		return
	}
	// Deauthorising the app invalidates every token it holds for the user.
	for _, other := range s.tokens {
		if other.app == t.app && other.user == t.user {
			other.revoked = true
		}
	}
	s.stats["facebook"].Revocations++
	writeJSON(w, http.StatusOK, map[string]any{"success": true})
}

// --- Instagram -----------------------------------------------------------

func (s *Server) instagramToken(w http.ResponseWriter, r *http.Request) {
	const p = "instagram"
	if !postForm(w, r) {
		return
	}
	f := r.PostForm
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.app(p, f.Get("client_id"), f.Get("client_secret"))
	if a == nil {
		s.reject(p, "bad_client_credentials")
		platformError(w, p, http.StatusBadRequest, "", "Error validating client secret", 0, 0)
		return
	}
	if f.Get("grant_type") != "authorization_code" {
		s.reject(p, "unsupported_grant_type")
		platformError(w, p, http.StatusBadRequest, "", "Invalid grant_type", 0, 0)
		return
	}
	c, reason := s.redeem(p, a, f.Get("code"), f.Get("redirect_uri"), f.Get("code_verifier"))
	if reason != "" {
		s.reject(p, reason)
		invalidGrant(w, p)
		return
	}
	// The short-lived token answer: user_id is a JSON number above 2^53.
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": s.issue(a, c.user, c.scopes, shortLivedTTL, false, false, ""),
		"user_id":      json.Number(c.user.ID), "permissions": strings.Join(c.scopes, ","),
	})
}

func (s *Server) instagramExchange(w http.ResponseWriter, r *http.Request) {
	const p = "instagram"
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[q.Get("access_token")]
	switch {
	case q.Get("grant_type") != "ig_exchange_token":
		s.reject(p, "unsupported_grant_type")
		platformError(w, p, http.StatusBadRequest, "", "Invalid grant_type", 0, 0)
	case t == nil || t.refresh || t.revoked || t.long || !s.clock.Now().Before(t.expires):
		s.reject(p, "bad_exchange_token")
		platformError(w, p, http.StatusBadRequest, "", "Invalid OAuth access token", 0, 0)
	case !subtleEqual(t.app.ClientSecret, q.Get("client_secret")):
		s.reject(p, "bad_client_credentials")
		platformError(w, p, http.StatusBadRequest, "", "Error validating client secret", 0, 0)
	default:
		s.stats[p].Refreshes++
		writeJSON(w, http.StatusOK, map[string]any{"access_token": s.issue(t.app, t.user, t.scopes, longLivedTTL, true, false, ""),
			"token_type": "bearer", "expires_in": int(longLivedTTL.Seconds())})
	}
}

func (s *Server) instagramRefresh(w http.ResponseWriter, r *http.Request) {
	const p = "instagram"
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[q.Get("access_token")]
	now := s.clock.Now()
	switch {
	case q.Get("grant_type") != "ig_refresh_token":
		s.reject(p, "unsupported_grant_type")
		platformError(w, p, http.StatusBadRequest, "", "Invalid grant_type", 0, 0)
	case t == nil || t.refresh || t.revoked || !t.long || !now.Before(t.expires):
		s.reject(p, "bad_refresh_token")
		platformError(w, p, http.StatusBadRequest, "", "Invalid OAuth access token", 0, 0)
	case now.Sub(t.issued) < instagramMinRefreshAge:
		s.reject(p, "token_too_young")
		platformError(w, p, http.StatusBadRequest, "", "Tokens must be at least 24 hours old to be refreshed", 0, 0)
	default:
		s.stats[p].Refreshes++
		writeJSON(w, http.StatusOK, map[string]any{"access_token": s.issue(t.app, t.user, t.scopes, longLivedTTL, true, false, ""),
			"token_type": "bearer", "expires_in": int(longLivedTTL.Seconds())})
	}
}

func (s *Server) instagramMe(w http.ResponseWriter, r *http.Request) {
	s.serveProfile(w, r, "instagram", func(w http.ResponseWriter) {
		platformError(w, "instagram", http.StatusBadRequest, "", "Invalid OAuth access token", 0, 0)
	}, func(t *token) any { return map[string]any{"user_id": t.user.ID, "username": t.user.Name} })
}

// serveProfile is every platform's "who am I" endpoint: a live access
// token gets body(token), anything else the platform's own refusal.
func (s *Server) serveProfile(w http.ResponseWriter, r *http.Request, platform string,
	unauthorized func(http.ResponseWriter), body func(*token) any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.bearer(r, platform)
	if t == nil {
		s.reject(platform, "bad_access_token")
		unauthorized(w)
		return
	}
	writeJSON(w, http.StatusOK, body(t))
}

func subtleEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// postForm accepts only a POSTed form, as every platform's token endpoint
// does, and parses it.
func postForm(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return false
	}
	return true
}
