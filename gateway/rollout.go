package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/telemetry"
)

// reasonLegacyOff is the decision route's reason with `legacy off`: the
// app's flow is gone, everyone takes the new one, and no flag is asked.
// The connect route then decides nothing either, so nothing counts it.
const reasonLegacyOff flags.Reason = "legacy_off"

// DecideConnect is the rollout's decision for a connect on platform, the
// one both places a connect begins use: the app's connect route
// (caddymodule's legacyStart) and the decision route (rolloutDecision).
// The rollout decides for the request's user (none: legacy, no_identity); a new arm
// that cannot start now (database or keys) is downgraded to legacy,
// store_unavailable, since the app's flow needs no credgate database;
// then the decision is counted (credgate_rollout_decisions_total, the
// rollout's own count that `rollout status` shows) and traced. With
// legacy off everyone goes to the new flow and nothing is asked or
// counted. It returns the user the decision was made for.
func (g *Gateway) DecideConnect(w http.ResponseWriter, r *http.Request, platform string) (flags.Decision, string) {
	if g.LegacyOff {
		return flags.Decision{Arm: flags.ArmNew, Reason: reasonLegacyOff}, ""
	}
	who := g.identify(w, r, telemetry.RouteConnect)
	g.watchIdentity(r.Context(), who.Result, platform)
	d := g.Rollout.Decide(r.Context(), who.UserID, platform)
	if d.Arm == flags.ArmNew && !g.newFlowCanStart(r.Context()) {
		// The legacy flow needs no credgate database: the user
		// connects through the app rather than meeting a 503.
		d = flags.Decision{Arm: flags.ArmLegacy, Variant: d.Variant, Reason: flags.ReasonStoreUnavailable}
	}
	g.Metrics.Decision(platform, d.Arm, d.Reason)
	_, span := g.Tracer.Start(r.Context(), "credgate.rollout.decide", trace.WithAttributes(
		telemetry.AttrPlatform.String(platform), telemetry.AttrFlow.String(string(d.Arm)),
		telemetry.AttrRolloutReason.String(string(d.Reason)), telemetry.AttrIdentity.String(string(who.Result))))
	span.End()
	return d, who.UserID
}

// NewStartTarget is where a connect on the new arm goes: credgate's start
// Route, returning to returnTo.
func NewStartTarget(platform, returnTo string) string {
	target := url.URL{Path: "/api/auth/oauth/" + platform, RawQuery: url.Values{"return_to": {returnTo}}.Encode()}
	return target.String()
}

// RolloutDecisionPrefix is the decision route's path before the platform.
const RolloutDecisionPrefix = "/api/credentials/rollout/"

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
// does (DecideConnect), and answers where to send the browser: the new
// start route, or the app's connect route carrying a decided mark
// (flags.DecidedMark), so that the decision is not made, and counted, a
// second time there.
func (g *Gateway) rolloutDecision(w http.ResponseWriter, r *http.Request, platform string) {
	p, ok := g.Providers[platform]
	if !ok {
		answer.Error(w, http.StatusNotFound, "unknown_platform", fmt.Sprintf("no platform %q is configured (configured: %s)",
			platform, strings.Join(g.platforms(), ", ")))
		return
	}
	// Checked before deciding: a request refused is not a decision.
	returnTo := g.LegacyStartReturnTo(r)
	if raw := r.URL.Query().Get("return_to"); raw != "" {
		if returnTo, ok = g.validReturnTo(raw); !ok {
			answer.Error(w, http.StatusBadRequest, "invalid_return_to", "return_to must be a path on this site under an allowed prefix")
			return
		}
	}
	d, user := g.DecideConnect(w, r, p.Name())
	view := rolloutDecisionView{Platform: p.Name(), Flow: d.Arm, Reason: d.Reason, Percentage: g.newPercentage(r.Context(), p.Name())}
	if d.Arm == flags.ArmNew {
		to := NewStartTarget(p.Name(), returnTo)
		view.Location = &to
	} else if path := g.legacyStartPath(p.Name()); path != "" {
		to := path + "?" + url.Values{flags.DecidedParam: {flags.DecidedMark(g.Keys.StateMACKey(), user, p.Name(), time.Now())}}.Encode()
		view.Location = &to
	}
	answer.JSON(w, http.StatusOK, view)
}

// legacyStartPath is the app's connect route for platform, or "" when
// credgate does not intercept it (no legacy_start).
func (g *Gateway) legacyStartPath(platform string) string {
	for path, p := range g.LegacyStarts {
		if p.Name() == platform {
			return path
		}
	}
	return ""
}

// DecidedLegacy reports whether the connect request r carries a valid
// decided mark for its user on platform, and returns that user. Any mark
// is removed from r first, valid or not. The user is read as the
// connect route reads it (no session refresh: the request goes to the
// app) and not counted again: the decision route counted it.
func (g *Gateway) DecidedLegacy(w http.ResponseWriter, r *http.Request, platform string) (string, bool) {
	if g.LegacyOff || !strings.Contains(r.URL.RawQuery, flags.DecidedParam+"=") {
		return "", false
	}
	mark := r.URL.Query().Get(flags.DecidedParam)
	removeQueryParam(r, flags.DecidedParam)
	return flags.ValidDecidedMark(g.Keys.StateMACKeys(), mark, platform, time.Now(), func() string {
		if g.ReadIdentity == nil {
			return ""
		}
		return g.ReadIdentity(w, r, identity.NoRefresh).UserID
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
// percentage, read exactly from a flag file's rule, or measured on
// sample ids for other sources. nil when the flag source is not ready or
// does not evaluate: every decision is legacy then, and the reason says
// why. It is read through InForceRecently, at most every few seconds per
// platform.
func (g *Gateway) newPercentage(ctx context.Context, platform string) *float64 {
	pct := func(v float64) *float64 { return &v }
	switch {
	case g.LegacyOff:
		return pct(100)
	case g.Halted(platform):
		return pct(0)
	}
	in := g.InForceRecently(ctx, platform)
	switch {
	case !in.Ready || in.Problem != "" || (in.Measured == flags.MeasuredSampled && in.Samples == 0):
		return nil
	case !in.KillSwitchOn:
		return pct(0)
	}
	return pct(in.NewPercent)
}

// newFlowCanStart reports whether a new flow could start now: the keys
// passed their check, the database watch sees no outage, and the
// database does not refuse a ping (a ping still unanswered after 250 ms
// counts as slow, not down). It runs only for users the rollout sends to
// the new flow.
func (g *Gateway) newFlowCanStart(ctx context.Context) bool {
	if !g.Available() {
		return false
	}
	// A database that refuses is down now, and the app's flow serves the
	// user better than a 503 would. One that only takes longer than the
	// budget (a loaded machine, a busy pool) is slow, not down: the flow
	// starts, and the database watch declares an outage on its own
	// repeated failures (watchDatabase).
	ctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	return g.DB.Ping(ctx) == nil || ctx.Err() != nil
}

// watchIdentity records the connect route's identity result and, when
// most of the last minute's requests there carried no usable identity
// while the rollout is above 0 %, warns (at most once a minute): those
// users all stay on the legacy flow, and nothing else would say so.
func (g *Gateway) watchIdentity(ctx context.Context, res identity.Result, platform string) {
	now := time.Now()
	g.IdentityWatch.Record(res, now)
	v, warn := g.IdentityWatch.Warn(now, func() bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		inForce := g.Rollout.InForce(ctx, platform, rolloutOnSamples)
		return inForce.KillSwitchOn && inForce.NewPercent > 0
	})
	if warn {
		g.Logger.Warn(unrecognisedWarning,
			zap.String("commonest_reason", string(v.Commonest)), zap.Int("requests_last_minute", v.Requests),
			zap.Float64("share_unrecognised", v.UnusableShare))
	}
}

// unrecognisedWarning is what the log and service-health say when most
// users at the connect route are not recognised.
const unrecognisedWarning = "most requests to the app's connect route carry no identity credgate recognises: " +
	"those users stay on the legacy flow (see credgate_identity_total by result and docs/identity.md)"

// rolloutOnSamples: enough sample ids to see any rollout of 1 % or more.
const rolloutOnSamples = 500
