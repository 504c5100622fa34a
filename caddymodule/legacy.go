package caddymodule

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/connect"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// legacyCallback handles the app's own callback URL, which the platforms
// already know. A state credgate issued (recognised by its MAC, with no
// database lookup) is finished here, whatever the rollout says now: flow
// affinity. Anything else goes to the legacy app untouched, its answer
// streamed, never buffered; afterwards, if credgate saw that flow begin
// at the app's connect route (its state, in legacy_flows), the flow's
// outcome is counted, for the metrics, the guard and the audit log alike
// (connect.Flows.CountLegacy). A request no flow began counts nowhere: junk on
// the app's callback path must not move the legacy arm's rate.
func (h *Handler) legacyCallback(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, p *oauth.Provider) error {
	state := r.URL.Query().Get("state")
	if h.app.keys.RecognizeState(state) {
		return serveAnswering(h.ServerErrors, w, func(w http.ResponseWriter) {
			h.gw.Answers.Traced(w, r, "credgate.oauth.callback", telemetry.SpanAttrs(p.Name(), string(flags.ArmNew)), func(w http.ResponseWriter, r *http.Request) {
				h.gw.Finish(w, r, p, state)
			})
		})
	}
	if h.gw.LegacyOff {
		answer.Error(w, http.StatusBadRequest, "invalid_state", "this sign-in link is unknown; start again")
		return nil
	}
	// The legacy arm as credgate observes it: the app's answer, streamed.
	ctx, span := h.app.tracer().Start(r.Context(), "credgate.legacy.callback", telemetry.SpanAttrs(p.Name(), string(flags.ArmLegacy))...)
	rec := caddyhttp.NewResponseRecorder(w, nil, nil)
	err := next.ServeHTTP(rec, r.WithContext(ctx))
	code, userCaused := h.gw.LegacyOutcome(r, rec.Status(), rec.Header().Get("Location"), err)
	counted := h.app.Available() && h.gw.Flows.CountLegacy(r.Context(), p.Name(), state, code, userCaused)
	span.SetAttributes(telemetry.AttrLegacyCounted.Bool(counted))
	telemetry.End(span, code)
	return err
}

// legacyStart handles the app's own "connect" route: the rollout decides,
// once per flow (gateway.DecideConnect), whether this user goes to the new flow
// (302 to the new start route, which stores the decision with the flow's
// state) or stays with the app. No identity means legacy. With legacy off
// everyone goes to the new flow. A browser the decision route already
// sent here on the legacy arm carries its decision (DecidedLegacy): it
// goes to the app without a second decision.
func (h *Handler) legacyStart(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, p *oauth.Provider) error {
	if user, ok := h.gw.DecidedLegacy(w, r, p.Name()); ok {
		return h.startLegacyFlow(w, r, next, p.Name(), user)
	}
	d, user := h.gw.DecideConnect(w, r, p.Name())
	if d.Arm != flags.ArmNew {
		return h.startLegacyFlow(w, r, next, p.Name(), user)
	}
	h.logger.Debug("rollout: new flow", zap.String("platform", p.Name()), zap.String("reason", string(d.Reason)))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, gateway.NewStartTarget(p.Name(), h.gw.LegacyStartReturnTo(r)), http.StatusFound)
	return nil
}

// flowFinished counts a finished flow (connect.Flows.Finished) for the
// metrics, every one, and for the rollout guard, the same way on both
// arms. A decline at the consent screen says nothing about the flow's
// health: the guard does not count it. A failure the user could have
// caused on purpose (an error= on the callback URL, a code the platform
// refused) counts once per user per window, and only in numbers
// (guard.Config.Judged): otherwise one account could halt the rollout for
// everyone. Anything else is a success ("") or a failure the platform,
// the app or credgate caused.
func (a *App) flowFinished(o connect.Outcome) {
	outcomes := a.rollout.Outcomes()
	switch {
	case telemetry.Outcome(o.Code) == telemetry.Declined:
	case o.UserCaused:
		outcomes.RecordUserCaused(o.Arm, o.Platform, o.UserID)
	default:
		outcomes.Record(o.Arm, o.Platform, o.Code == "")
	}
	a.metrics.Connection(o.Platform, o.Arm, o.Code, o.Took)
}

// startLegacyFlow hands the start to the app and, when the app answers
// with its redirect to the platform, remembers the app's state (its
// SHA-256) so that the flow's callback can be counted (legacy_flows). The
// answer is streamed as the app writes it; the state is recorded after,
// within a short budget, and a failure to record it only leaves that flow
// uncounted.
func (h *Handler) startLegacyFlow(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, platform, user string) error {
	rec := caddyhttp.NewResponseRecorder(w, nil, nil)
	err := next.ServeHTTP(rec, r)
	if err != nil || rec.Status() < 300 || rec.Status() >= 400 || !h.app.Available() {
		return err
	}
	to, perr := url.Parse(rec.Header().Get("Location"))
	state := ""
	if perr == nil {
		state = to.Query().Get("state")
	}
	if state == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 250*time.Millisecond)
	defer cancel()
	if err := vault.RecordLegacyFlow(ctx, h.app.pool, state, platform, user); err != nil {
		h.logger.Debug("legacy start: the flow's state was not recorded; its outcome will not be counted", zap.String("platform", platform), zap.String("error", err.Error()))
	}
	return nil
}
