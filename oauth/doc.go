// Package oauth is credgate's OAuth 2.0 client for Twitter/X, LinkedIn,
// Facebook and Instagram (API with Instagram Login), plus a generic
// profile configured entirely from settings.
//
// Each platform is a Profile: its endpoints, client authentication style,
// PKCE policy, scope separator, and the steps that differ (a long-lived
// token exchange, the refresh strategy, revoke, profile lookup, the shape
// of its errors). A Provider is a Profile plus one app's credentials.
// Begin starts a flow, Complete finishes it, Refresh and Revoke manage the
// result. The standard grants go through golang.org/x/oauth2.
//
// Every outbound call takes a context, is bounded by a timeout (10 s by
// default) and reads at most 1 MiB. Every failure is an *Error with a
// stable Code; none carries a token, a code or the provider's raw body.
//
// The package knows nothing of Caddy or the database.
package oauth
