package identity

// Result says what reading a request's identity found. The set is closed,
// so that metrics can start every series at zero and dashboards divide by
// series that exist from the first request.
type Result string

// The results. OK, Refreshed and Stale are usable identities; every other result
// means the request is treated as anonymous (the connect route sends it to
// the legacy flow, the credential routes answer 401).
const (
	// OK: a valid, current access token.
	OK Result = "ok"
	// Refreshed: the access token had expired, credgate refreshed the
	// session at Supabase Auth and wrote it back as the app's cookie.
	Refreshed Result = "refreshed"
	// Stale: the access token has expired but is otherwise good and its
	// session can be refreshed; read where credgate does not refresh (the
	// app's connect route, which may hand the request to the app), the
	// user is recognised for the rollout decision, and credgate's own
	// route refreshes the session next.
	Stale Result = "stale"
	// Missing: no session cookie and no bearer token.
	Missing Result = "missing"
	// Malformed: a cookie or header that is not a session, an
	// array, or a JWT (or exceeds the size or chunk caps).
	Malformed Result = "malformed"
	// Expired: the token's signature and claims are good but it has
	// expired, and it could not be refreshed (no refresh configured, or
	// the session's format carries no refresh token).
	Expired Result = "expired"
	// RefreshFailed: the token had expired and Supabase Auth refused or
	// did not answer the refresh.
	RefreshFailed Result = "refresh_failed"
	// BadSignature: the signature does not verify, or the token uses an
	// algorithm no configured key can check.
	BadSignature Result = "bad_signature"
	// UnknownKID: the token names a key id the JWKS does not have, even
	// after a refetch.
	UnknownKID Result = "unknown_kid"
	// KeysUnavailable: the JWKS could not be fetched.
	KeysUnavailable Result = "keys_unavailable"
	// WrongIssuer: the iss claim is not the configured issuer.
	WrongIssuer Result = "wrong_issuer"
	// WrongAudience: the aud claim lacks the configured audience.
	WrongAudience Result = "wrong_audience"
	// NotUser: the token is not a signed-in user's: a role other than
	// the configured one (an anon or service_role key), or no user id
	// (the claim is absent or not a UUID).
	NotUser Result = "not_user"
	// Anonymous: an anonymous sign-in, refused by configuration.
	Anonymous Result = "anonymous"
)

// Results lists every result, in a stable order.
func Results() []Result {
	return []Result{OK, Refreshed, Stale, Missing, Malformed, Expired, RefreshFailed, BadSignature,
		UnknownKID, KeysUnavailable, WrongIssuer, WrongAudience, NotUser, Anonymous}
}

// Usable reports whether the result names a user.
func (r Result) Usable() bool { return r == OK || r == Refreshed || r == Stale }
