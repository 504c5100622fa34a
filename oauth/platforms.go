package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/credgate/credgate/secret"
)

// Platforms lists the built-in platform names.
var Platforms = []string{"twitter", "linkedin", "facebook", "instagram"}

// Lookup returns the profile of a built-in platform, or the generic
// profile built from g.
func Lookup(name string, g GenericSettings) (Profile, error) {
	switch name {
	case "twitter":
		return twitter(), nil
	case "linkedin":
		return linkedin(), nil
	case "facebook":
		return facebook(), nil
	case "instagram":
		return instagram(), nil
	case "generic":
		if _, ok := authStyles[g.AuthStyle]; !ok {
			return Profile{}, fmt.Errorf("oauth: auth_style must be basic, post or auto, got %q", g.AuthStyle)
		}
		return generic(g), nil
	}
	return Profile{}, fmt.Errorf("oauth: unknown platform %q (want twitter, linkedin, facebook, instagram or generic)", name)
}

// SandboxURLs are a platform's auth, token and API URLs on the credgate
// sandbox at base: the sandbox serves every real path of a platform under
// base/<platform>, so each real origin is replaced by that prefix.
func SandboxURLs(platform, base string) (authURL, tokenURL, apiBase string, err error) {
	p, err := Lookup(platform, GenericSettings{})
	if err != nil || platform == "generic" {
		return "", "", "", fmt.Errorf("oauth: no sandbox for %q", platform)
	}
	prefix := strings.TrimRight(base, "/") + "/" + platform
	swap := func(real string) string {
		u, _ := url.Parse(real)
		return prefix + u.Path
	}
	return swap(p.AuthURL), swap(p.TokenURL), prefix, nil
}

func twitter() Profile {
	return Profile{
		Name:     "twitter",
		AuthURL:  "https://x.com/i/oauth2/authorize",
		TokenURL: "https://api.x.com/2/oauth2/token",
		APIBase:  "https://api.x.com",
		// X requires HTTP Basic for confidential clients.
		AuthStyle:       oauth2.AuthStyleInHeader,
		PKCE:            PKCERequired,
		ScopeSeparator:  " ",
		DefaultScopes:   []string{"tweet.read", "users.read", "offline.access"},
		DefaultLifetime: 2 * time.Hour,
		errors:          twitterErrors,
		refresh:         refreshToken,
		identify: func(ctx context.Context, p *Provider, access secret.Value) (Identity, error) {
			var r struct {
				Data struct {
					ID       string `json:"id"`
					Username string `json:"username"`
				} `json:"data"`
			}
			err := p.callJSON(ctx, http.MethodGet, p.profile.APIBase+"/2/users/me", nil, access, &r)
			return Identity{ID: r.Data.ID, Username: r.Data.Username}, err
		},
		revoke: func(ctx context.Context, p *Provider, t TokenSet) error {
			// Revoking the refresh token ends the whole grant.
			tok, hint := t.RefreshToken, "refresh_token"
			if tok.IsZero() {
				tok, hint = t.AccessToken, "access_token"
			}
			return p.postFormBasic(ctx, p.profile.APIBase+"/2/oauth2/revoke", url.Values{"token": {tok.Reveal()}, "token_type_hint": {hint}})
		},
	}
}

// twitterErrors: X answers a bad, used or expired code (and a dead refresh
// token) with 400 invalid_request, "Value passed for the token was
// invalid." rather than invalid_grant.
var twitterErrors = grantErrorNamed("token was invalid")

func linkedin() Profile {
	return Profile{
		Name:            "linkedin",
		AuthURL:         "https://www.linkedin.com/oauth/v2/authorization",
		TokenURL:        "https://www.linkedin.com/oauth/v2/accessToken",
		APIBase:         "https://api.linkedin.com",
		AuthStyle:       oauth2.AuthStyleInParams,
		PKCE:            PKCENever,
		ScopeSeparator:  " ",
		DefaultScopes:   []string{"openid", "profile", "email"},
		DefaultLifetime: 60 * 24 * time.Hour,
		errors:          linkedinErrors,
		// Refresh tokens exist only for approved apps; without one the
		// refresh reports needs_reauth.
		refresh: refreshToken,
		identify: func(ctx context.Context, p *Provider, access secret.Value) (Identity, error) {
			var r struct {
				Sub  string `json:"sub"`
				Name string `json:"name"`
			}
			err := p.callJSON(ctx, http.MethodGet, p.profile.APIBase+"/v2/userinfo", nil, access, &r)
			return Identity{ID: r.Sub, Username: r.Name}, err
		},
	}
}

// linkedinErrors: LinkedIn's bad-code answer is 400 invalid_request with a
// long description naming the authorization code.
var linkedinErrors = grantErrorNamed("authorization code")

// grantErrorNamed parses any known error shape and normalises an
// invalid_request whose description contains phrase to invalid_grant, for
// platforms that report a dead code or token that way.
func grantErrorNamed(phrase string) errorParser {
	return func(status int, body []byte) (Code, string, bool) {
		code, desc, ok := anyShape(status, body)
		if ok && code == CodeInvalidRequest && strings.Contains(strings.ToLower(desc), phrase) {
			code = CodeInvalidGrant
		}
		return code, desc, ok
	}
}

func facebook() Profile {
	return Profile{
		Name:     "facebook",
		AuthURL:  "https://www.facebook.com/v22.0/dialog/oauth",
		TokenURL: "https://graph.facebook.com/v22.0/oauth/access_token",
		APIBase:  "https://graph.facebook.com",
		// Facebook takes the secret as a parameter.
		AuthStyle:       oauth2.AuthStyleInParams,
		PKCE:            PKCES256,
		ScopeSeparator:  ",",
		DefaultScopes:   []string{"public_profile"},
		DefaultLifetime: 60 * 24 * time.Hour,
		errors:          anyShape,
		afterExchange:   facebookLongLived,
		// DESIGN §5: no refresh token; the user re-authorises before expiry.
		Renewal: RenewNever,
		// No refresh tokens: a still-valid long-lived token is exchanged
		// again; an expired one needs the user.
		refresh: func(ctx context.Context, p *Provider, t TokenSet) (TokenSet, error) {
			if !t.Expiry.IsZero() && !p.now().Before(t.Expiry) {
				return TokenSet{}, newError(p.profile.Name, "refresh", CodeNeedsReauth, 0, "long-lived token expired")
			}
			out, err := facebookLongLived(ctx, p, t)
			if e, ok := errors.AsType[*Error](err); ok && e.Code == CodeInvalidGrant {
				return out, e.with(func(e *Error) { e.Code, e.Retryable = CodeNeedsReauth, false })
			}
			return out, err
		},
		identify: func(ctx context.Context, p *Provider, access secret.Value) (Identity, error) {
			var r struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			}
			err := p.callJSON(ctx, http.MethodGet, p.profile.APIBase+"/me?fields=id,name", nil, access, &r)
			return Identity{ID: r.ID, Username: r.Name}, err
		},
		grantedScopes: facebookPermissions,
		revoke: func(ctx context.Context, p *Provider, t TokenSet) error {
			if t.PlatformUserID == "" {
				return newError(p.profile.Name, "revoke", CodeInvalidRequest, 0, "no platform user id")
			}
			var r struct {
				Success bool `json:"success"`
			}
			err := p.callJSON(ctx, http.MethodDelete, p.profile.APIBase+"/"+url.PathEscape(t.PlatformUserID)+"/permissions", nil, t.AccessToken, &r)
			if err == nil && !r.Success {
				return newError(p.profile.Name, "revoke", CodeInvalidResponse, 200, "revoke not confirmed")
			}
			return err
		},
	}
}

// facebookLongLived swaps a token for a long-lived one (~60 days) with
// grant_type=fb_exchange_token.
func facebookLongLived(ctx context.Context, p *Provider, t TokenSet) (TokenSet, error) {
	q := url.Values{
		"grant_type":        {"fb_exchange_token"},
		"client_id":         {p.cfg.ClientID},
		"client_secret":     {p.cfg.ClientSecret.Reveal()},
		"fb_exchange_token": {t.AccessToken.Reveal()},
	}
	var r tokenResponse
	if err := p.callJSON(ctx, http.MethodGet, p.profile.TokenURL+"?"+q.Encode(), nil, secret.Value{}, &r); err != nil {
		return TokenSet{}, err
	}
	out, err := p.fromResponse(r)
	out.Scopes = t.Scopes
	return out, err
}

// facebookPermissions reads the permissions the user granted the app:
// Graph's token responses carry none, and the user may have unticked
// some of those asked for. Only status "granted" counts ("declined" and
// "expired" do not).
func facebookPermissions(ctx context.Context, p *Provider, access secret.Value) ([]string, error) {
	var r struct {
		Data []struct {
			Permission string `json:"permission"`
			Status     string `json:"status"`
		} `json:"data"`
	}
	if err := p.callJSON(ctx, http.MethodGet, p.profile.APIBase+"/me/permissions", nil, access, &r); err != nil {
		return nil, err
	}
	scopes := []string{}
	for _, d := range r.Data {
		if d.Status == "granted" && d.Permission != "" {
			scopes = append(scopes, d.Permission)
		}
	}
	return scopes, nil
}

func instagram() Profile {
	return Profile{
		Name:            "instagram",
		AuthURL:         "https://www.instagram.com/oauth/authorize",
		TokenURL:        "https://api.instagram.com/oauth/access_token",
		APIBase:         "https://graph.instagram.com",
		AuthStyle:       oauth2.AuthStyleInParams,
		PKCE:            PKCENever,
		ScopeSeparator:  ",",
		DefaultScopes:   []string{"instagram_business_basic"},
		DefaultLifetime: 60 * 24 * time.Hour,
		errors:          anyShape,
		exchange:        instagramExchange,
		Renewal:         RenewAccessToken,
		MinRefreshAge:   24 * time.Hour,
		afterExchange: func(ctx context.Context, p *Provider, t TokenSet) (TokenSet, error) {
			return instagramGrant(ctx, p, "/access_token", url.Values{
				"grant_type": {"ig_exchange_token"}, "client_secret": {p.cfg.ClientSecret.Reveal()}, "access_token": {t.AccessToken.Reveal()}}, t)
		},
		// ig_refresh_token renews a long-lived token at least 24 h old.
		refresh: func(ctx context.Context, p *Provider, t TokenSet) (TokenSet, error) {
			if !t.Expiry.IsZero() && !p.now().Before(t.Expiry) {
				return TokenSet{}, newError(p.profile.Name, "refresh", CodeNeedsReauth, 0, "long-lived token expired")
			}
			return instagramGrant(ctx, p, "/refresh_access_token", url.Values{
				"grant_type": {"ig_refresh_token"}, "access_token": {t.AccessToken.Reveal()}}, t)
		},
		identify: func(ctx context.Context, p *Provider, access secret.Value) (Identity, error) {
			var r struct {
				UserID   json.Number `json:"user_id"`
				ID       string      `json:"id"`
				Username string      `json:"username"`
			}
			err := p.callJSON(ctx, http.MethodGet, p.profile.APIBase+"/me?fields=user_id,username", nil, access, &r)
			id := r.UserID.String()
			if id == "" {
				id = r.ID
			}
			return Identity{ID: id, Username: r.Username}, err
		},
	}
}

// instagramExchange does the code exchange by hand: Instagram answers
// either {"data":[{…}]} (as documented) or a flat object with a numeric
// user_id that a float64 would corrupt.
func instagramExchange(ctx context.Context, p *Provider, code string, _ secret.Value, redirectURL string) (TokenSet, error) {
	form := url.Values{
		"client_id": {p.cfg.ClientID}, "client_secret": {p.cfg.ClientSecret.Reveal()},
		"grant_type": {"authorization_code"}, "redirect_uri": {redirectURL}, "code": {code},
	}
	var r tokenResponse
	if err := p.callJSON(ctx, http.MethodPost, p.profile.TokenURL, form, secret.Value{}, &r); err != nil {
		return TokenSet{}, err
	}
	if len(r.Data) > 0 {
		r.AccessToken, r.UserID, r.Permissions = r.Data[0].AccessToken, r.Data[0].UserID, r.Data[0].Permissions
	}
	t, err := p.fromResponse(r)
	t.PlatformUserID = r.UserID.String()
	switch perms := r.Permissions.(type) {
	case string:
		t.Scopes = splitScopes(perms)
	case []any:
		for _, s := range perms {
			if s, ok := s.(string); ok {
				t.Scopes = append(t.Scopes, s)
			}
		}
	}
	return t, err
}

func instagramGrant(ctx context.Context, p *Provider, path string, q url.Values, prev TokenSet) (TokenSet, error) {
	var r tokenResponse
	if err := p.callJSON(ctx, http.MethodGet, p.profile.APIBase+path+"?"+q.Encode(), nil, secret.Value{}, &r); err != nil {
		return TokenSet{}, err
	}
	t, err := p.fromResponse(r)
	t.PlatformUserID, t.Scopes = prev.PlatformUserID, prev.Scopes
	return t, err
}

// authStyles are the generic profile's auth_style values.
var authStyles = map[string]oauth2.AuthStyle{
	"": oauth2.AuthStyleAutoDetect, "auto": oauth2.AuthStyleAutoDetect,
	"basic": oauth2.AuthStyleInHeader, "header": oauth2.AuthStyleInHeader,
	"post": oauth2.AuthStyleInParams, "params": oauth2.AuthStyleInParams,
}

func generic(g GenericSettings) Profile {
	style := authStyles[g.AuthStyle]
	pkce := PKCES256
	if g.PKCE != nil && !*g.PKCE {
		pkce = PKCENever
	}
	sep := g.ScopeSeparator
	if sep == "" {
		sep = " "
	}
	idField, nameField := g.IDField, g.NameField
	if idField == "" {
		idField = "sub"
	}
	if nameField == "" {
		nameField = "preferred_username"
	}
	p := Profile{
		Name: "generic", AuthStyle: style, PKCE: pkce, ScopeSeparator: sep,
		DefaultScopes: []string{"openid", "profile"}, errors: anyShape, refresh: refreshToken,
	}
	// An OIDC provider names the user in the ID token of the code
	// exchange: read there, the identity costs no request to userinfo
	// (which, for OIDC, must give the same sub).
	p.identifyIDToken = func(pr *Provider, raw string) (Identity, bool) {
		claims, ok := idTokenClaims(raw, pr.cfg.ClientID, pr.now())
		if !ok {
			return Identity{}, false
		}
		id, name := claimString(claims, idField), claimString(claims, nameField)
		// Without the name in the token, userinfo (when there is one)
		// still says it.
		if id == "" || (name == "" && g.UserinfoURL != "") {
			return Identity{}, false
		}
		return Identity{ID: id, Username: name}, true
	}
	if g.UserinfoURL != "" {
		p.identify = func(ctx context.Context, pr *Provider, access secret.Value) (Identity, error) {
			var r map[string]any
			if err := pr.callJSON(ctx, http.MethodGet, g.UserinfoURL, nil, access, &r); err != nil {
				return Identity{}, err
			}
			return Identity{ID: claimString(r, idField), Username: claimString(r, nameField)}, nil
		}
	}
	if g.RevokeURL != "" {
		p.revoke = func(ctx context.Context, pr *Provider, t TokenSet) error {
			tok := t.RefreshToken
			if tok.IsZero() {
				tok = t.AccessToken
			}
			// The client authenticates as at the token endpoint (RFC 7009
			// §2.1); with auto, basic first and post if that is refused.
			form := url.Values{"token": {tok.Reveal()}}
			basic := func() error { return pr.postFormBasic(ctx, g.RevokeURL, form) }
			post := func() error {
				f := url.Values{"token": {tok.Reveal()}, "client_id": {pr.cfg.ClientID}, "client_secret": {pr.cfg.ClientSecret.Reveal()}}
				return pr.callJSON(ctx, http.MethodPost, g.RevokeURL, f, secret.Value{}, nil)
			}
			switch style {
			case oauth2.AuthStyleInHeader:
				return basic()
			case oauth2.AuthStyleInParams:
				return post()
			}
			if err := basic(); err == nil || (CodeOf(err) != CodeInvalidClient && CodeOf(err) != CodeInvalidRequest) {
				return err
			}
			return post()
		}
	}
	return p
}

// trustedChannel reports whether a token endpoint's answers may stand in
// for a signature: over TLS, or on this host.
func trustedChannel(tokenURL string) bool {
	u, err := url.Parse(tokenURL)
	if err != nil {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return host == "localhost"
}

// idTokenClaims returns the claims of an OIDC ID token received from the
// token endpoint, if it was issued to clientID and has not expired. Its
// signature is not checked: the token came straight from the token
// endpoint, over the TLS connection the client authenticated on, and OIDC
// Core §3.1.3.7 (6) lets that connection stand in for the signature. A
// token that is malformed, for another client or expired is not an error
// here: the caller asks userinfo instead. Numbers stay json.Number, so a
// numeric id keeps every digit.
func idTokenClaims(raw, clientID string, now time.Time) (jwt.MapClaims, bool) {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser(jwt.WithJSONNumber()).ParseUnverified(raw, claims); err != nil {
		return nil, false
	}
	aud, err := claims.GetAudience()
	if err != nil || !slices.Contains(aud, clientID) {
		return nil, false
	}
	// azp, when present, names the client the token was for (required
	// with more than one audience).
	azp, hasAZP := claims["azp"].(string)
	if (hasAZP || len(aud) > 1) && azp != clientID {
		return nil, false
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil || !exp.After(now) {
		return nil, false
	}
	return claims, true
}

// claimString is a JSON string or number as text, every digit kept (an
// id of 12345678901 must not read 1.2345678901e+10); anything else
// (absent, null, true, an object) is "", not an id.
func claimString(m map[string]any, key string) string {
	switch v := m[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}
