package vault

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The app's own OAuth flows, as credgate sees them begin and end. At the
// app's connect route (legacy_start) credgate passes the request to the
// app and sees its answer: a redirect to the platform carrying the app's
// state. Remembering that state (its SHA-256 only, like oauth_states) in
// the database lets whichever replica sees the callback count that
// flow's outcome, so that the legacy arm's success rate is made of real
// flows: a request to the app's callback path that no flow began counts
// nowhere (migration 008).

// LegacyFlowTTL is how long a legacy flow's start is remembered: longer
// than any platform's consent screen takes.
const LegacyFlowTTL = 30 * time.Minute

// LegacyFlow is a legacy flow's start, taken back at its callback.
type LegacyFlow struct {
	Platform string
	// UserID is who started it, "" when credgate did not recognise them.
	UserID    string
	StartedAt time.Time
}

func legacyStateHash(state string) []byte {
	h := sha256.Sum256([]byte(state))
	return h[:]
}

// RecordLegacyFlow remembers the start of the app's flow with state on
// platform, by user ("" when unknown). The same state twice keeps the
// first start.
func RecordLegacyFlow(ctx context.Context, db DB, state, platform, user string) error {
	var uid *string
	if user != "" {
		uid = &user
	}
	_, err := db.Exec(ctx, `INSERT INTO legacy_flows (state_hash, platform, user_id, expires_at)
		VALUES ($1, $2, $3::uuid, now() + $4::interval) ON CONFLICT (state_hash) DO NOTHING`,
		legacyStateHash(state), platform, uid, LegacyFlowTTL)
	if err != nil {
		return fmt.Errorf("recording a legacy flow: %w", err)
	}
	return nil
}

// ErrNoLegacyFlow: no flow credgate saw begin has this state (or it
// expired, or its callback was counted already).
var ErrNoLegacyFlow = errors.New("no legacy flow began with this state")

// ConsumeLegacyFlow takes the flow that began with state on platform out
// of the table, once: a second callback with the same state finds
// nothing.
func ConsumeLegacyFlow(ctx context.Context, db DB, state, platform string) (LegacyFlow, error) {
	f := LegacyFlow{Platform: platform}
	var user *string
	err := db.QueryRow(ctx, `DELETE FROM legacy_flows WHERE state_hash = $1 AND platform = $2 AND expires_at > now()
		RETURNING user_id::text, created_at`, legacyStateHash(state), platform).Scan(&user, &f.StartedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return f, ErrNoLegacyFlow
	}
	if err != nil {
		return f, fmt.Errorf("taking a legacy flow: %w", err)
	}
	if user != nil {
		f.UserID = *user
	}
	return f, nil
}

// CleanupLegacyFlows deletes the starts whose callback never came.
func CleanupLegacyFlows(ctx context.Context, db DB) (int64, error) {
	tag, err := db.Exec(ctx, `DELETE FROM legacy_flows WHERE expires_at <= now()`)
	if err != nil {
		return 0, fmt.Errorf("deleting expired legacy flows: %w", err)
	}
	return tag.RowsAffected(), nil
}
