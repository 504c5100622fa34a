package caddymodule

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
)

// legacyCallback handles the app's own callback URL, which the platforms
// already know. A state credgate issued (recognised by its MAC, with no
// database lookup) is finished here, whatever the rollout says now: flow
// affinity. Anything else is the legacy app's flow and goes to it
// untouched; its outcome is counted by the app's response status, which
// is streamed, never buffered.
func (h *Handler) legacyCallback(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, p *oauth.Provider) error {
	state := r.URL.Query().Get("state")
	if h.app.keys.RecognizeState(state) {
		h.app.traced(w, r, "credgate.oauth.callback", spanAttrs(p.Name(), telemetry.FlowNew), func(w http.ResponseWriter, r *http.Request) {
			h.finish(w, r, p, state)
		})
		return nil
	}
	if h.legacyOff {
		writeError(w, http.StatusBadRequest, "invalid_state", "this sign-in link is unknown; start again")
		return nil
	}
	// The legacy arm as credgate observes it: the app's answer, streamed.
	ctx, span := h.app.tracer().Start(r.Context(), "credgate.legacy.callback", spanAttrs(p.Name(), telemetry.FlowLegacy)...)
	rec := caddyhttp.NewResponseRecorder(w, nil, nil)
	err := next.ServeHTTP(rec, r.WithContext(ctx))
	status := rec.Status()
	if status == 0 {
		status = http.StatusOK
	}
	ok := err == nil && status < 400
	h.app.rollout.Outcomes().Record(flags.ArmLegacy, p.Name(), ok)
	// The app's failure as a closed-set code: its status class.
	code := ""
	switch {
	case err != nil:
		code = telemetry.CodeAppError
	case status >= 500:
		code = telemetry.CodeAppHTTP5xx
	case status >= 400:
		code = telemetry.CodeAppHTTP4xx
	}
	h.app.metrics.Connection(p.Name(), telemetry.FlowLegacy, code, 0)
	telemetry.End(span, code)
	return err
}

// legacyStart handles the app's own "connect" route: the rollout decides,
// once per flow, whether this user goes to the new flow (302 to the new
// start route, which stores the decision with the flow's state) or stays
// with the app. No identity means legacy. With legacy off everyone goes to
// the new flow.
func (h *Handler) legacyStart(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, p *oauth.Provider) error {
	if !h.legacyOff {
		who := h.identify(w, r, telemetry.RouteConnect)
		h.watchIdentity(r.Context(), who.Result, p.Name())
		// Decide with no user too: it answers legacy with reason
		// no_identity, counted like every other decision.
		d := h.app.rollout.Decide(r.Context(), who.UserID, p.Name())
		if d.Arm == flags.ArmNew && !h.newFlowCanStart(r.Context()) {
			// The legacy flow needs no credgate database: the user
			// connects through the app rather than meeting a 503.
			d = flags.Decision{Arm: flags.ArmLegacy, Variant: d.Variant, Reason: flags.ReasonStoreUnavailable}
		}
		h.app.metrics.Decision(p.Name(), string(d.Arm), string(d.Reason))
		_, span := h.app.tracer().Start(r.Context(), "credgate.rollout.decide", trace.WithAttributes(
			telemetry.AttrPlatform.String(p.Name()), telemetry.AttrFlow.String(string(d.Arm)),
			telemetry.AttrRolloutReason.String(string(d.Reason)), telemetry.AttrIdentity.String(string(who.Result))))
		span.End()
		if d.Arm != flags.ArmNew {
			return next.ServeHTTP(w, r)
		}
		h.logger.Debug("rollout: new flow", zap.String("platform", p.Name()), zap.String("reason", string(d.Reason)))
	}
	target := url.URL{Path: "/api/auth/oauth/" + p.Name(), RawQuery: url.Values{"return_to": {h.legacyReturnTo(r)}}.Encode()}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target.String(), http.StatusFound)
	return nil
}

// newFlowCanStart reports whether a new flow could start now: the keys
// passed their check and the database answers a ping within 250 ms. It
// runs only for users the rollout sends to the new flow.
func (h *Handler) newFlowCanStart(ctx context.Context) bool {
	if !h.app.Available() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	return h.app.pool.Ping(ctx) == nil
}

// legacyReturnTo is where a flow begun at the legacy start route returns:
// the configured path, else the page the user came from if it is on this
// site and allowed, else the first allowed prefix.
func (h *Handler) legacyReturnTo(r *http.Request) string {
	if h.LegacyReturnTo != "" {
		return h.LegacyReturnTo
	}
	if ref, err := url.Parse(r.Referer()); err == nil && ref.Scheme+"://"+ref.Host == h.PublicOrigin {
		if rt, ok := h.validReturnTo(ref.RequestURI()); ok {
			return rt
		}
	}
	return h.ReturnToAllow[0]
}

// watchIdentity records the connect route's identity result and, when
// most of the last minute's requests there carried no usable identity
// while the rollout is above 0 %, warns (at most once a minute): those
// users all stay on the legacy flow, and nothing else would say so.
func (h *Handler) watchIdentity(ctx context.Context, res identity.Result, platform string) {
	now := time.Now()
	h.identityWatch.Record(res, now)
	v, warn := h.identityWatch.Warn(now, func() bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		inForce := h.app.rollout.InForce(ctx, platform, rolloutOnSamples)
		return inForce.KillSwitchOn && inForce.NewPercent > 0
	})
	if warn {
		h.logger.Warn(unrecognisedWarning,
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
