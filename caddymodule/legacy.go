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
	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

// defaultLegacyErrorPattern recognises the app's failure redirect after
// its callback: an error (or oauth_error) query parameter.
const defaultLegacyErrorPattern = `[?&](error|oauth_error)=`

// legacyCallback handles the app's own callback URL, which the platforms
// already know. A state credgate issued (recognised by its MAC, with no
// database lookup) is finished here, whatever the rollout says now: flow
// affinity. Anything else goes to the legacy app untouched, its answer
// streamed, never buffered; afterwards, if credgate saw that flow begin
// at the app's connect route (its state, in legacy_flows), the flow's
// outcome is counted, for the metrics, the guard and the audit log alike
// (countLegacyOutcome). A request no flow began counts nowhere: junk on
// the app's callback path must not move the legacy arm's rate.
func (h *Handler) legacyCallback(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, p *oauth.Provider) error {
	state := r.URL.Query().Get("state")
	if h.app.keys.RecognizeState(state) {
		h.app.answers().Traced(w, r, "credgate.oauth.callback", telemetry.SpanAttrs(p.Name(), string(flags.ArmNew)), func(w http.ResponseWriter, r *http.Request) {
			h.finish(w, r, p, state)
		})
		return nil
	}
	if h.legacyOff {
		answer.Error(w, http.StatusBadRequest, "invalid_state", "this sign-in link is unknown; start again")
		return nil
	}
	// The legacy arm as credgate observes it: the app's answer, streamed.
	ctx, span := h.app.tracer().Start(r.Context(), "credgate.legacy.callback", telemetry.SpanAttrs(p.Name(), string(flags.ArmLegacy))...)
	rec := caddyhttp.NewResponseRecorder(w, nil, nil)
	err := next.ServeHTTP(rec, r.WithContext(ctx))
	code, userCaused := h.legacyOutcome(r, rec, err)
	counted := h.app.Available() && h.flows.CountLegacy(r.Context(), p.Name(), state, code, userCaused)
	span.SetAttributes(telemetry.AttrLegacyCounted.Bool(counted))
	telemetry.End(span, code)
	return err
}

// legacyOutcome reads how the app's flow ended: "" for a success, else
// its code. The platform's error= on the callback is the user's decline
// (access_denied) or a failure the user can cause (userCaused: anyone
// can put an error= on the URL); after that, the app's answer: no answer
// (app_error), 5xx, 4xx, or a redirect that reports a failure
// (legacy_error_pattern, app_error_redirect).
func (h *Handler) legacyOutcome(r *http.Request, rec caddyhttp.ResponseRecorder, err error) (code string, userCaused bool) {
	if cbErr := oauth.CallbackError("", r.URL.Query()); cbErr != nil {
		return string(cbErr.Code), cbErr.Code != oauth.CodeAccessDenied
	}
	status := rec.Status()
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
	case status >= 300 && h.legacyError.MatchString(rec.Header().Get("Location")):
		return telemetry.CodeAppErrorRedirect, false
	}
	return "", false
}

// legacyStart handles the app's own "connect" route: the rollout decides,
// once per flow (decideConnect), whether this user goes to the new flow
// (302 to the new start route, which stores the decision with the flow's
// state) or stays with the app. No identity means legacy. With legacy off
// everyone goes to the new flow. A browser the decision route already
// sent here on the legacy arm carries its decision (decidedLegacy): it
// goes to the app without a second decision.
func (h *Handler) legacyStart(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, p *oauth.Provider) error {
	if user, ok := h.decidedLegacy(w, r, p.Name()); ok {
		return h.startLegacyFlow(w, r, next, p.Name(), user)
	}
	d, user := h.decideConnect(w, r, p.Name())
	if d.Arm != flags.ArmNew {
		return h.startLegacyFlow(w, r, next, p.Name(), user)
	}
	h.logger.Debug("rollout: new flow", zap.String("platform", p.Name()), zap.String("reason", string(d.Reason)))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, newStartTarget(p.Name(), h.legacyReturnTo(r)), http.StatusFound)
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
		h.logger.Debug("legacy start: the flow's state was not recorded; its outcome will not be counted", zap.String("platform", platform), errField(err))
	}
	return nil
}

// newFlowCanStart reports whether a new flow could start now: the keys
// passed their check, the database watch sees no outage, and the
// database does not refuse a ping (a ping still unanswered after 250 ms
// counts as slow, not down). It runs only for users the rollout sends to
// the new flow.
func (h *Handler) newFlowCanStart(ctx context.Context) bool {
	if !h.app.Available() {
		return false
	}
	// A database that refuses is down now, and the app's flow serves the
	// user better than a 503 would. One that only takes longer than the
	// budget (a loaded machine, a busy pool) is slow, not down: the flow
	// starts, and the database watch declares an outage on its own
	// repeated failures (watchDatabase).
	ctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	return h.app.pool.Ping(ctx) == nil || ctx.Err() != nil
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
