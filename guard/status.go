package guard

import (
	"context"
	"time"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/vault"
)

// RolloutStatus is one platform's rollout: what the flags put in force,
// and the guard's state with both arms' windowed outcomes.
type RolloutStatus struct {
	Platform string         `json:"platform"`
	Flags    *flags.InForce `json:"flags,omitempty"`
	Guard    Platform       `json:"guard"`
	Halted   bool           `json:"halted"`
	// Decisions are the window's rollout decisions at the app's connect
	// route by arm and reason, summed over every replica, most frequent
	// first.
	Decisions []ReasonCount `json:"decisions"`
	// BackEnd is how the app's back end read this platform's tokens
	// through credgate over the last hour (every replica), and whether
	// transition mode writes them to the app's columns instead: the
	// runbook's rule before any percentage rises.
	BackEnd BackEndReads `json:"back_end"`
}

// BackEndReads is RolloutStatus.BackEnd.
type BackEndReads struct {
	vault.ReadCounts
	Window         string `json:"window"`
	TransitionMode bool   `json:"transition_mode"`
}

// RolloutSamples is how many sample ids the percentage in force is
// measured on (±1.5 points at 25 %).
const RolloutSamples = 1000

// ReadRolloutStatus reads each platform's guard state and windowed
// outcomes from db and, with a rollout, the flags it puts in force: the
// admin route and `caddy credgate rollout status` both answer with it.
func ReadRolloutStatus(ctx context.Context, db vault.DB, rollout *flags.Rollout, window time.Duration, platforms []string) ([]RolloutStatus, error) {
	states, err := Status(ctx, db, window, platforms)
	if err != nil {
		return nil, err
	}
	decisions, err := DecisionsInWindow(ctx, db, window)
	if err != nil {
		return nil, err
	}
	reads, err := vault.BackendReadsIn(ctx, db, vault.BackendReadWindow)
	if err != nil {
		return nil, err
	}
	settings, err := vault.LoadSettings(ctx, db)
	if err != nil {
		return nil, err
	}
	out := make([]RolloutStatus, 0, len(states))
	for _, p := range states {
		s := RolloutStatus{Platform: p.Name, Guard: p, Halted: p.Halted(), Decisions: decisions[p.Name],
			BackEnd: BackEndReads{ReadCounts: reads[p.Name], Window: vault.BackendReadWindow.String(), TransitionMode: settings.TransitionMode}}
		if s.Decisions == nil {
			s.Decisions = []ReasonCount{}
		}
		if rollout != nil {
			inForce := rollout.InForce(ctx, p.Name, RolloutSamples)
			s.Flags = &inForce
		}
		out = append(out, s)
	}
	return out, nil
}
