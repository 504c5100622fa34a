package gateway

import (
	"net/http"
	"net/url"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
)

// DefaultLegacyErrorPattern recognises the app's failure redirect after
// its callback: an error (or oauth_error) query parameter.
const DefaultLegacyErrorPattern = `[?&](error|oauth_error)=`

// LegacyOutcome reads how the app's flow ended: "" for a success, else
// its code. The platform's error= on the callback is the user's decline
// (access_denied) or a failure the user can cause (userCaused: anyone
// can put an error= on the URL); after that, the app's answer: no answer
// (app_error), 5xx, 4xx, or a redirect that reports a failure
// (legacy_error_pattern, app_error_redirect).
func (g *Gateway) LegacyOutcome(r *http.Request, status int, location string, err error) (code string, userCaused bool) {
	if cbErr := oauth.CallbackError("", r.URL.Query()); cbErr != nil {
		return string(cbErr.Code), cbErr.Code != oauth.CodeAccessDenied
	}
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case err != nil:
		return telemetry.CodeAppError, false
	case status >= 500:
		return telemetry.CodeAppHTTP5xx, false
	case status >= 400:
		return telemetry.CodeAppHTTP4xx, false
	case status >= 300 && g.LegacyError.MatchString(location):
		return telemetry.CodeAppErrorRedirect, false
	}
	return "", false
}

// LegacyStartReturnTo is where a flow begun at the legacy start route returns:
// the configured path, else the page the user came from if it is on this
// site and allowed, else the first allowed prefix.
func (g *Gateway) LegacyStartReturnTo(r *http.Request) string {
	if g.LegacyReturnTo != "" {
		return g.LegacyReturnTo
	}
	if ref, err := url.Parse(r.Referer()); err == nil && ref.Scheme+"://"+ref.Host == g.PublicOrigin {
		if rt, ok := g.validReturnTo(ref.RequestURI()); ok {
			return rt
		}
	}
	return g.ReturnToAllow[0]
}
