package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"go.opentelemetry.io/otel/trace"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/telemetry"
)

// reasonLegacyOff is the decision route's reason with `legacy off`: the
// app's flow is gone, everyone takes the new one, and no flag is asked.
// The connect route then decides nothing either, so nothing counts it.
const reasonLegacyOff flags.Reason = "legacy_off"

// decideConnect is the rollout's decision for a connect on platform, the
// one both places a connect begins use: the app's connect route
// (legacyStart) and the decision route (rolloutDecision). The rollout
// decides for the request's user (none: legacy, no_identity); a new arm
// that cannot start now (database or keys) is downgraded to legacy,
// store_unavailable, since the app's flow needs no credgate database;
// then the decision is counted (credgate_rollout_decisions_total, the
// rollout's own count that `rollout status` shows) and traced. With
// legacy off everyone goes to the new flow and nothing is asked or
// counted. It returns the user the decision was made for.
func (h *Handler) decideConnect(w http.ResponseWriter, r *http.Request, platform string) (flags.Decision, string) {
	if h.legacyOff {
		return flags.Decision{Arm: flags.ArmNew, Reason: reasonLegacyOff}, ""
	}
	who := h.identify(w, r, telemetry.RouteConnect)
	h.watchIdentity(r.Context(), who.Result, platform)
	d := h.app.rollout.Decide(r.Context(), who.UserID, platform)
	if d.Arm == flags.ArmNew && !h.newFlowCanStart(r.Context()) {
		// The legacy flow needs no credgate database: the user
		// connects through the app rather than meeting a 503.
		d = flags.Decision{Arm: flags.ArmLegacy, Variant: d.Variant, Reason: flags.ReasonStoreUnavailable}
	}
	h.app.metrics.Decision(platform, d.Arm, d.Reason)
	_, span := h.app.tracer().Start(r.Context(), "credgate.rollout.decide", trace.WithAttributes(
		telemetry.AttrPlatform.String(platform), telemetry.AttrFlow.String(string(d.Arm)),
		telemetry.AttrRolloutReason.String(string(d.Reason)), telemetry.AttrIdentity.String(string(who.Result))))
	span.End()
	return d, who.UserID
}

// newStartTarget is where a connect on the new arm goes: credgate's start
// route, returning to returnTo.
func newStartTarget(platform, returnTo string) string {
	target := url.URL{Path: "/api/auth/oauth/" + platform, RawQuery: url.Values{"return_to": {returnTo}}.Encode()}
	return target.String()
}

// rolloutDecisionPrefix is the decision route's path before the platform.
const rolloutDecisionPrefix = "/api/credentials/rollout/"

// rolloutDecisionView is the decision route's answer.
type rolloutDecisionView struct {
	Platform string       `json:"platform"`
	Flow     flags.Arm    `json:"flow"`
	Reason   flags.Reason `json:"reason"`
	// Percentage is the share of users the rollout sends to the new
	// flow now (newPercentage); null when the flag source cannot say.
	Percentage *float64 `json:"percentage"`
	// Location is where to send the browser; null on the legacy arm when
	// credgate does not know the app's connect route (no legacy_start).
	Location *string `json:"location"`
}

// rolloutDecision: GET /api/credentials/rollout/{platform}?return_to=…,
// for an app whose Connect button asks first rather than navigating to
// its connect route. It decides and counts exactly as the connect route
// does (decideConnect), and answers where to send the browser: the new
// start route, or the app's connect route carrying a decided mark
// (flags.DecidedMark), so that the decision is not made, and counted, a
// second time there.
func (h *Handler) rolloutDecision(w http.ResponseWriter, r *http.Request, platform string) {
	p, ok := h.providers[platform]
	if !ok {
		answer.Error(w, http.StatusNotFound, "unknown_platform", fmt.Sprintf("no platform %q is configured (configured: %s)",
			platform, strings.Join(h.app.platforms(), ", ")))
		return
	}
	// Checked before deciding: a request refused is not a decision.
	returnTo := h.legacyReturnTo(r)
	if raw := r.URL.Query().Get("return_to"); raw != "" {
		if returnTo, ok = h.validReturnTo(raw); !ok {
			answer.Error(w, http.StatusBadRequest, "invalid_return_to", "return_to must be a path on this site under an allowed prefix")
			return
		}
	}
	d, user := h.decideConnect(w, r, p.Name())
	view := rolloutDecisionView{Platform: p.Name(), Flow: d.Arm, Reason: d.Reason, Percentage: h.newPercentage(r.Context(), p.Name())}
	if d.Arm == flags.ArmNew {
		to := newStartTarget(p.Name(), returnTo)
		view.Location = &to
	} else if path := h.legacyStartPath(p.Name()); path != "" {
		to := path + "?" + url.Values{flags.DecidedParam: {flags.DecidedMark(h.app.keys.StateMACKey(), user, p.Name(), time.Now())}}.Encode()
		view.Location = &to
	}
	answer.JSON(w, http.StatusOK, view)
}

// legacyStartPath is the app's connect route for platform, or "" when
// credgate does not intercept it (no legacy_start).
func (h *Handler) legacyStartPath(platform string) string {
	for path, p := range h.legacyStarts {
		if p.Name() == platform {
			return path
		}
	}
	return ""
}

// decidedLegacy reports whether the connect request r carries a valid
// decided mark for its user on platform, and returns that user. Any mark
// is removed from r first, valid or not. The user is read as the
// connect route reads it (no session refresh: the request goes to the
// app) and not counted again: the decision route counted it.
func (h *Handler) decidedLegacy(w http.ResponseWriter, r *http.Request, platform string) (string, bool) {
	if h.legacyOff || !strings.Contains(r.URL.RawQuery, flags.DecidedParam+"=") {
		return "", false
	}
	mark := r.URL.Query().Get(flags.DecidedParam)
	removeQueryParam(r, flags.DecidedParam)
	return flags.ValidDecidedMark(h.app.keys.StateMACKeys(), mark, platform, time.Now(), func() string {
		if h.Identity == nil {
			return ""
		}
		return h.Identity.read(w, r, identity.NoRefresh).UserID
	})
}

// removeQueryParam drops every name=… from r's query and leaves the rest
// as the client wrote it (order, encoding): the app gets the request it
// would have had.
func removeQueryParam(r *http.Request, name string) {
	parts := strings.Split(r.URL.RawQuery, "&")
	parts = slices.DeleteFunc(parts, func(p string) bool {
		key, _, _ := strings.Cut(p, "=")
		k, err := url.QueryUnescape(key)
		return err == nil && k == name
	})
	r.URL.RawQuery = strings.Join(parts, "&")
	r.RequestURI = r.URL.RequestURI()
}

// newPercentage is the share of users the rollout sends to the new flow
// on platform now, in percent: 100 with legacy off; 0 while the guard
// halts the platform or the kill switch is off; else the split's
// percentage, read exactly from a flag file's rule (exactPercentages),
// or measured on sample ids for other sources. nil when the flag source
// is not ready or does not evaluate: every decision is legacy then, and
// the reason says why. It is read at most every percentEvery per
// platform (percentReads).
func (h *Handler) newPercentage(ctx context.Context, platform string) *float64 {
	pct := func(v float64) *float64 { return &v }
	switch {
	case h.legacyOff:
		return pct(100)
	case h.app.halted(platform):
		return pct(0)
	}
	in := h.app.inForceRecently(ctx, platform)
	switch {
	case !in.Ready || in.Problem != "" || (in.Measured == flags.MeasuredSampled && in.Samples == 0):
		return nil
	case !in.KillSwitchOn:
		return pct(0)
	}
	return pct(in.NewPercent)
}

// percentEvery is how long the decision route answers from the last
// reading of a platform's percentage: sampling a remote flagd takes a
// thousand round trips, and a page asks on every click.
const percentEvery = 5 * time.Second

// percentReads holds each app's last readings (weakly: an entry goes with
// its app, after a reload).
var percentReads sync.Map // weak.Pointer[App] → *percentRead

type percentRead struct {
	mu   sync.Mutex
	last map[string]flags.InForce
	at   map[string]time.Time
}

// inForceRecently is what the flags put in force for platform, read at
// most every percentEvery: the flag file's rule when it can be read, as
// the admin rollout route reads it, else a sample through the provider.
func (a *App) inForceRecently(ctx context.Context, platform string) flags.InForce {
	key := weak.Make(a)
	v, loaded := percentReads.LoadOrStore(key, &percentRead{last: map[string]flags.InForce{}, at: map[string]time.Time{}})
	if !loaded {
		runtime.AddCleanup(a, func(k weak.Pointer[App]) { percentReads.Delete(k) }, key)
	}
	c := v.(*percentRead)
	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.at[platform]; ok && time.Since(at) < percentEvery {
		return c.last[platform]
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// exactPercentages replaces Flags only when it read the rule.
	status := []RolloutStatus{{Platform: platform, Flags: &flags.InForce{Platform: platform}}}
	a.exactPercentages(ctx, status)
	in := *status[0].Flags
	if in.Measured == "" {
		in = a.rollout.InForce(ctx, platform, guard.RolloutSamples)
	}
	if in.Ready {
		// A source not ready yet is asked again next time.
		c.last[platform], c.at[platform] = in, time.Now()
	}
	return in
}
