package connect

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/vault"
)

// CountLegacy counts the outcome (code, "" for a success) of the app's
// own flow with state, if credgate saw it begin at the app's connect
// route (legacy_flows): Finished with its duration, and an audit row
// (flow legacy, no token). It reports whether it counted. The database
// gets a budget of its own that ctx's cancellation does not end: the app
// has already answered, and counting never delays or fails its callback.
func (f *Flows) CountLegacy(ctx context.Context, platform, state, code string, userCaused bool) bool {
	if state == "" {
		return false
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DBTimeout)
	defer cancel()
	flow, err := vault.ConsumeLegacyFlow(dctx, f.DB, state, platform)
	if err != nil {
		if !errors.Is(err, vault.ErrNoLegacyFlow) {
			f.logger().Warn("legacy callback: reading the flow's start; its outcome is not counted", zap.String("platform", platform), errField(err))
		}
		return false
	}
	// The app may have written a new token for the user: this instance's
	// back-end readers see it at once, not after worker.RecentFor.
	if flow.UserID != "" {
		f.Renewals.Forget(flow.UserID, platform)
	}
	took := time.Since(flow.StartedAt)
	f.finished(Outcome{Arm: flags.ArmLegacy, Platform: platform, UserID: flow.UserID, Code: code, UserCaused: userCaused, Took: took})
	status := vault.Success
	if code != "" {
		status = vault.Failed
	}
	f.Audit.Record(ctx, vault.Event{UserID: flow.UserID, Platform: platform, Action: vault.ActionConnect,
		Status: status, Flow: string(flags.ArmLegacy), ErrorCode: code, Duration: took})
	return true
}
