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
		code = "app_error"
	case status >= 500:
		code = "http_5xx"
	case status >= 400:
		code = "http_4xx"
	}
	h.app.metrics.Connection(p.Name(), telemetry.FlowLegacy, ok, code, 0)
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
		user := h.userID(r)
		if user == "" {
			return next.ServeHTTP(w, r)
		}
		d := h.app.rollout.Decide(r.Context(), user, p.Name())
		if d.Arm == flags.ArmNew && !h.newFlowCanStart(r.Context()) {
			// The legacy flow needs no credgate database: the user
			// connects through the app rather than meeting a 503.
			d = flags.Decision{Arm: flags.ArmLegacy, Variant: d.Variant, Reason: flags.ReasonStoreUnavailable}
		}
		h.app.metrics.Decision(p.Name(), string(d.Arm), string(d.Reason))
		_, span := h.app.tracer().Start(r.Context(), "credgate.rollout.decide", trace.WithAttributes(
			telemetry.AttrPlatform.String(p.Name()), telemetry.AttrFlow.String(string(d.Arm)),
			telemetry.AttrRolloutReason.String(string(d.Reason))))
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
