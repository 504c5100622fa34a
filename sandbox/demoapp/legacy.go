package demoapp

import (
	"cmp"
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
)

// The page's query parameters after one of the app's own flows (credgate
// recognises a failure by legacy_error=, its legacy_error_pattern in the
// demo's Caddyfile).
const (
	paramConnected = "legacy_connected"
	paramError     = "legacy_error"
)

// connect is the app's own connect route, which credgate hands over when
// the rollout keeps the user on the legacy flow: the browser goes to the
// platform with a state of the app's (never one credgate recognises).
func (a *App) connect(w http.ResponseWriter, r *http.Request, platform string) {
	user := a.user(r)
	if user == "" {
		writeError(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
		return
	}
	start, err := a.providers[platform].Begin()
	if err != nil {
		back(w, r, url.Values{paramError: {"internal"}, "platform": {platform}})
		return
	}
	now := a.now()
	a.mu.Lock()
	for s, f := range a.flows {
		if now.Sub(f.started) > stateTTL {
			delete(a.flows, s)
		}
	}
	a.flows[start.State.Reveal()] = flow{user: user, platform: platform, verifier: start.Verifier, started: now}
	a.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, start.URL, http.StatusFound)
}

// callback is the app's own callback, for the flows credgate passes
// through (those it did not start): the state is the app's, used once;
// the code is exchanged and the account it names kept for the user who
// started the flow.
func (a *App) callback(w http.ResponseWriter, r *http.Request, platform string) {
	q := r.URL.Query()
	fail := func(code string) { back(w, r, url.Values{paramError: {code}, "platform": {platform}}) }
	a.mu.Lock()
	f, ok := a.flows[q.Get("state")]
	delete(a.flows, q.Get("state"))
	a.mu.Unlock()
	switch {
	case !ok || f.platform != platform || a.now().Sub(f.started) > stateTTL:
		fail("invalid_state")
		return
	case a.user(r) != "" && a.user(r) != f.user:
		fail("state_mismatch")
		return
	}
	if cbErr := oauth.CallbackError(platform, q); cbErr != nil {
		fail(string(cbErr.Code))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	tok, err := a.providers[platform].Complete(ctx, secret.New(q.Get("code")), f.verifier)
	if err != nil {
		fail(string(oauth.CodeOf(err)))
		return
	}
	c := Connection{Platform: platform, AccountID: tok.PlatformUserID, Username: tok.Username, ConnectedAt: a.now().UTC()}
	a.mu.Lock()
	if a.connections[f.user] == nil {
		a.connections[f.user] = map[string]Connection{}
	}
	a.connections[f.user][platform] = c
	a.mu.Unlock()
	back(w, r, url.Values{paramConnected: {platform}})
}

// Connections are the legacy connections the app made for user, by
// platform name.
func (a *App) Connections(user string) []Connection {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.SortedFunc(maps.Values(a.connections[user]), func(x, y Connection) int { return cmp.Compare(x.Platform, y.Platform) })
	if out == nil {
		return []Connection{} // [] in JSON, not null
	}
	return out
}

// listConnections: GET ConnectionsPath, {"connections":[…]}.
func (a *App) listConnections(w http.ResponseWriter, r *http.Request) {
	user := a.user(r)
	if user == "" {
		writeError(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"connections": a.Connections(user)})
}

// disconnect: DELETE ConnectionsPath/<platform>, from the app's own
// pages only (a cross-site form must not drop a user's account).
func (a *App) disconnect(w http.ResponseWriter, r *http.Request, platform string) {
	user := a.user(r)
	if user == "" {
		writeError(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
		return
	}
	if !a.sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross_origin", "disconnect from the app's own pages")
		return
	}
	a.mu.Lock()
	_, ok := a.connections[user][platform]
	delete(a.connections[user], platform)
	a.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_connected", "the app has no "+platform+" account for you")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"platform": platform, "disconnected": true})
}

// back sends the browser to the app's page with the flow's outcome.
func back(w http.ResponseWriter, r *http.Request, q url.Values) {
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "/?"+q.Encode(), http.StatusFound)
}

// sameOrigin is credgate's own check for a disconnect: the Origin header
// when the browser sends one, else Sec-Fetch-Site.
func (a *App) sameOrigin(r *http.Request) bool {
	if origin := r.Header.Get("Origin"); origin != "" {
		return origin == a.origin
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}
