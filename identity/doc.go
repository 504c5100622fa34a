// Package identity learns who the signed-in user of the app in front of
// which credgate sits is, from what the user's browser really sends: the
// session cookie a Supabase app's helpers write (@supabase/ssr's
// "sb-<project-ref>-auth-token", single or chunked, "base64-" or plain
// JSON, the older auth-helpers array, or a bare JWT), or an
// "Authorization: Bearer" header.
//
// It is its own package, free of Caddy, because each step is a place where
// a real app differs from a stand-in and needs its own tests: the cookie
// formats (session.go), verifying a token whose key may be an HS256 secret
// or a key in a JWKS that rotates (verifier.go, keys.go), refreshing an
// access token that went stale on an idle page the way @supabase/ssr does
// and writing the refreshed session back in the same format (refresh.go,
// cookies.go), and naming why a request carried no usable identity, so
// that an operator whose users are not recognised can see it (Result).
package identity
