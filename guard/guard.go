// Package guard holds the rollout's success-rate line by itself: when the
// new flow does worse than it should on a platform, new starts on that
// platform go back to the legacy flow, whatever the flag says, until an
// operator resumes it.
//
// The migration guide asks a person to watch for a success rate of at
// least 95 % before each step up. The guard watches the same thing all
// the time, from the outcomes credgate already counts (flags.Outcomes:
// credgate's flow results for the new arm, the app's callback statuses
// for the legacy arm):
//
//   - every replica adds its new outcomes to rollout_outcomes, in 10 s
//     buckets, so all replicas and the `rollout status` command see one
//     sliding window per platform;
//   - the guard trips for a platform when, within the window and with at
//     least MinSamples new-arm outcomes, the new arm's success rate is
//     below MinSuccess, or below the legacy arm's rate minus MaxGap (the
//     gap is only judged once the legacy arm has MinSamples outcomes too);
//   - a trip is latched in rollout_halts and audited (rollout_halted), so
//     it holds in every replica and across restarts; Resume clears it
//     (audited, rollout_resumed) and starts a fresh window, so the
//     outcomes that caused the halt cannot trip it again.
//
// Flows already started finish on their arm: a callback follows the arm
// stored with its state, never the guard.
//
// DecisionLog, beside it, shares the rollout's decisions by reason the same
// way (rollout_decisions), guard or no guard, for `rollout status`; so
// does OutcomeLog the outcomes when the guard is off, since the window
// is what `rollout status` shows too.
//
// No Caddy here: caddymodule runs the guard's loop and asks it, per
// decision, whether a platform is halted — a map read, no database.
package guard

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/vault"
)

// Config is the guard's line. Start from DefaultConfig: a zero field is
// taken as written (min_success 0 turns the absolute floor off, max_gap
// 0 allows no gap at all).
type Config struct {
	// MinSuccess is the lowest acceptable new-arm success rate (0.95).
	MinSuccess float64
	// MaxGap is how far the new arm may fall below the legacy arm (0.05).
	MaxGap float64
	// MinSamples is how many new-arm outcomes the window needs before the
	// guard judges (50); the legacy comparison needs as many legacy ones.
	MinSamples int64
	// Window is the sliding window (10 minutes).
	Window time.Duration
}

// The defaults, from the migration guide's 95 % success criterion.
const (
	DefaultMinSuccess = 0.95
	DefaultMaxGap     = 0.05
	DefaultMinSamples = 50
	DefaultWindow     = 10 * time.Minute
)

// DefaultConfig is the guide's line: 95 %, within 5 points of the legacy
// flow, judged on at least 50 new flows in the last 10 minutes.
func DefaultConfig() Config {
	return Config{MinSuccess: DefaultMinSuccess, MaxGap: DefaultMaxGap, MinSamples: DefaultMinSamples, Window: DefaultWindow}
}

// Validate rejects a line that cannot be meant.
func (c Config) Validate() error {
	switch {
	case c.MinSuccess < 0 || c.MinSuccess > 1:
		return fmt.Errorf("guard: min_success must be between 0 and 1, got %v", c.MinSuccess)
	case c.MaxGap < 0 || c.MaxGap > 1:
		return fmt.Errorf("guard: max_gap must be between 0 and 1, got %v", c.MaxGap)
	case c.MinSamples < 1:
		return fmt.Errorf("guard: min_samples must be at least 1, got %d", c.MinSamples)
	case c.Window < time.Minute:
		return fmt.Errorf("guard: window must be at least 1m, got %v", c.Window)
	}
	return nil
}

// Rate is one arm's outcomes in the window.
type Rate struct {
	Successes int64 `json:"successes"`
	// Failures credgate attributes to the platform (down, nonsense) or
	// to itself (the tokens could not be stored): they count fully.
	Failures int64 `json:"failures"`
	// UserFailures are failures a user can cause on purpose (an error=
	// on the callback, a code the platform refused), each user counted
	// at most once per window and replica. Config.Judged counts them
	// only once there are MinSamples of them: one account, or a handful,
	// cannot halt a platform for everyone, while a flow that fails for
	// many users (a scope the platform refuses to everyone) still trips.
	UserFailures int64 `json:"user_failures,omitempty"`
}

// Samples is the number of outcomes.
func (r Rate) Samples() int64 { return r.Successes + r.Failures }

// Success is the success rate, 0 with no samples.
func (r Rate) Success() float64 {
	if r.Samples() == 0 {
		return 0
	}
	return float64(r.Successes) / float64(r.Samples())
}

// Judged is r as the guard judges it: its user-caused failures folded
// into Failures once there are MinSamples of them, dropped before.
func (c Config) Judged(r Rate) Rate {
	if r.UserFailures >= c.MinSamples {
		r.Failures += r.UserFailures
	}
	r.UserFailures = 0
	return r
}

// Trips says whether the window's outcomes trip the guard, and why.
func (c Config) Trips(newArm, legacy Rate) (reason string, trips bool) {
	newArm, legacy = c.Judged(newArm), c.Judged(legacy)
	if newArm.Samples() < c.MinSamples {
		return "", false
	}
	if s := newArm.Success(); s < c.MinSuccess {
		return fmt.Sprintf("new flow success %.3f over %d flows is below min_success %.3f", s, newArm.Samples(), c.MinSuccess), true
	}
	if legacy.Samples() >= c.MinSamples && newArm.Success() < legacy.Success()-c.MaxGap {
		return fmt.Sprintf("new flow success %.3f over %d flows is more than max_gap %.3f below the legacy flow's %.3f over %d",
			newArm.Success(), newArm.Samples(), c.MaxGap, legacy.Success(), legacy.Samples()), true
	}
	return "", false
}

// Halt is a latched trip.
type Halt struct {
	Platform      string    `json:"platform"`
	At            time.Time `json:"halted_at"`
	Reason        string    `json:"reason"`
	NewSuccess    float64   `json:"new_success"`
	NewSamples    int64     `json:"new_samples"`
	LegacySuccess float64   `json:"legacy_success"`
	LegacySamples int64     `json:"legacy_samples"`
}

// Platform is one platform's guard state.
type Platform struct {
	Name string `json:"platform"`
	// Halt is set while the platform is halted.
	Halt *Halt `json:"halt,omitempty"`
	// ResumedAt is the last resume; the window starts there if later.
	ResumedAt *time.Time `json:"resumed_at,omitempty"`
	ResumedBy string     `json:"resumed_by,omitempty"`
	New       Rate       `json:"new"`
	Legacy    Rate       `json:"legacy"`
}

// Halted reports whether the platform is halted.
func (p Platform) Halted() bool { return p.Halt != nil }

// currentBucket is the start of the 10 s bucket now() falls in: the
// granularity of the shared window, dated by the database's clock.
const currentBucket = `date_bin('10 seconds', now(), TIMESTAMPTZ '2000-01-01')`

// retention is how long outcome buckets are kept: far longer than any
// sensible window, for `rollout status --window`.
const retention = 24 * time.Hour

// ErrNotHalted is Resume's answer for a platform that is not halted.
var ErrNotHalted = errors.New("not halted")

// Guard follows one process's outcome counter. Safe for concurrent use.
type Guard struct {
	pool      *pgxpool.Pool
	cfg       Config
	outcomes  *OutcomeLog
	platforms []string
	logger    *zap.Logger
	// OnHalt, if set, hears of each halt this process latched.
	onHalt func(Halt)

	// halted is nil until the first tick has read the latches: until
	// then every platform counts as halted (see Halted).
	halted atomic.Pointer[map[string]bool]
	view   atomic.Pointer[[]Platform]

	mu sync.Mutex // one tick at a time
}

// Option adjusts a Guard.
type Option func(*Guard)

// WithLogger sets where trips and database trouble are logged.
func WithLogger(l *zap.Logger) Option { return func(g *Guard) { g.logger = l } }

// OnHalt sets a function called once for each halt this process latched.
func OnHalt(fn func(Halt)) Option { return func(g *Guard) { g.onHalt = fn } }

// New returns a guard over outcomes for platforms. Call Tick (or Run) to
// make it follow them.
func New(pool *pgxpool.Pool, cfg Config, outcomes *flags.Outcomes, platforms []string, opts ...Option) *Guard {
	g := &Guard{pool: pool, cfg: cfg, outcomes: NewOutcomeLog(pool, outcomes), platforms: slices.Sorted(slices.Values(platforms)),
		logger: zap.NewNop()}
	for _, opt := range opts {
		opt(g)
	}
	return g
}

// Config is the guard's line.
func (g *Guard) Config() Config { return g.cfg }

// Halted reports whether new starts on platform go to legacy. It reads
// what the last tick saw: no database on the decision path. Until a tick
// has read the latches once, every platform counts as halted: a replica
// that just started must not send users to a platform another replica
// halted (and the new flow needs the database anyway).
func (g *Guard) Halted(platform string) bool {
	halted := g.halted.Load()
	return halted == nil || (*halted)[platform]
}

// Loaded reports whether a tick has read the latches yet.
func (g *Guard) Loaded() bool { return g.halted.Load() != nil }

// Platforms is what the last tick saw, per platform; nil before the
// first tick succeeded.
func (g *Guard) Platforms() []Platform {
	if v := g.view.Load(); v != nil {
		return *v
	}
	return nil
}

// tickTimeout bounds one tick: a database that stops answering without
// closing the connection must not stall the guard for minutes.
const tickTimeout = 5 * time.Second

// Run ticks every interval until ctx ends, then flushes once more so
// that a reload or a stop loses no outcome. A failing tick (the database
// is down) is logged once, and once again when ticks succeed; the halts
// last seen stay in force meanwhile.
func (g *Guard) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		// Not cancelled by ctx (see flushloop.Run): a stop must not cut
		// the tick's flush between PostgreSQL's commit and the counters
		// hearing of it, or the last flush adds the same outcomes again.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tickTimeout)
		err := g.Tick(tctx)
		cancel()
		switch {
		case ctx.Err() != nil:
		case err != nil && !failing:
			g.logger.Warn("rollout guard cannot reach the database; the halts last seen stay in force", zap.Error(err))
		case err == nil && failing:
			g.logger.Info("rollout guard reaches the database again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tickTimeout)
			defer cancel()
			g.mu.Lock()
			defer g.mu.Unlock()
			if err := g.outcomes.Flush(fctx); err != nil {
				g.logger.Warn("rollout guard could not add its last outcomes to the window", zap.Error(err))
			}
			return
		case <-t.C:
		}
	}
}

// Tick adds this process's new outcomes to the shared window, reads the
// window and the latches, and latches any platform that now trips.
func (g *Guard) Tick(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.outcomes.Flush(ctx); err != nil {
		return err
	}
	view, err := Status(ctx, g.pool, g.cfg.Window, g.platforms)
	if err != nil {
		return err
	}
	for i, p := range view {
		if p.Halted() {
			continue
		}
		reason, trips := g.cfg.Trips(p.New, p.Legacy)
		if !trips {
			continue
		}
		h := Halt{Platform: p.Name, Reason: reason, NewSuccess: p.New.Success(), NewSamples: p.New.Samples(),
			LegacySuccess: p.Legacy.Success(), LegacySamples: p.Legacy.Samples()}
		latched, err := g.latch(ctx, &h, p.ResumedAt)
		if err != nil {
			return err
		}
		if latched {
			g.logger.Warn("rollout halted: new starts go to the legacy flow until `caddy credgate rollout resume --platform "+p.Name+"`",
				zap.String("platform", p.Name), zap.String("reason", reason), zap.Float64("new_success", h.NewSuccess),
				zap.Int64("new_samples", h.NewSamples), zap.Float64("legacy_success", h.LegacySuccess), zap.Int64("legacy_samples", h.LegacySamples))
			if g.onHalt != nil {
				g.onHalt(h)
			}
		}
		if latched {
			view[i].Halt = &h
		}
		// Otherwise another replica latched it, or an operator resumed
		// it after the window was read: the next tick reads which.
	}
	halted := map[string]bool{}
	for _, p := range view {
		if p.Halted() {
			halted[p.Name] = true
		}
	}
	g.halted.Store(&halted)
	g.view.Store(&view)
	return nil
}

// latch records the halt unless the platform is already halted, or was
// resumed since the window was read (observedResume is the resumed_at
// the window was read under), with its audit row in the same
// transaction; latched is false when another replica or an operator got
// there first. It sets h.At from the database's clock.
func (g *Guard) latch(ctx context.Context, h *Halt, observedResume *time.Time) (latched bool, err error) {
	err = vault.InTx(ctx, g.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO rollout_halts (platform, halted_at, reason, new_success, new_samples, legacy_success, legacy_samples)
			VALUES ($1, now(), $2, $3, $4, $5, $6)
			ON CONFLICT (platform) DO UPDATE SET halted_at = EXCLUDED.halted_at, reason = EXCLUDED.reason,
				new_success = EXCLUDED.new_success, new_samples = EXCLUDED.new_samples,
				legacy_success = EXCLUDED.legacy_success, legacy_samples = EXCLUDED.legacy_samples
			WHERE rollout_halts.halted_at IS NULL AND rollout_halts.resumed_at IS NOT DISTINCT FROM $7
			RETURNING halted_at`,
			h.Platform, h.Reason, h.NewSuccess, h.NewSamples, h.LegacySuccess, h.LegacySamples, observedResume).Scan(&h.At)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		latched = true
		return vault.AppendAudit(ctx, tx, vault.Event{Platform: h.Platform, Action: vault.ActionRolloutHalted, Status: vault.Success,
			Details: map[string]any{"reason": h.Reason, "new_success": h.NewSuccess, "new_samples": h.NewSamples,
				"legacy_success": h.LegacySuccess, "legacy_samples": h.LegacySamples,
				"min_success": g.cfg.MinSuccess, "max_gap": g.cfg.MaxGap, "min_samples": g.cfg.MinSamples, "window": g.cfg.Window.String()}})
	})
	if err != nil {
		return false, fmt.Errorf("guard: latching the halt of %s: %w", h.Platform, err)
	}
	return latched, nil
}

// Status reads, for each platform, its latch and both arms' outcomes in
// the window ending now (starting no earlier than the last resume), by
// the database's clock. Platforms that have a latch or outcomes but are
// not in platforms are included too.
func Status(ctx context.Context, db vault.DB, window time.Duration, platforms []string) ([]Platform, error) {
	byName := map[string]*Platform{}
	get := func(name string) *Platform {
		if p, ok := byName[name]; ok {
			return p
		}
		p := &Platform{Name: name}
		byName[name] = p
		return p
	}
	for _, name := range platforms {
		get(name)
	}
	rows, err := db.Query(ctx, `SELECT platform, halted_at, coalesce(reason, ''), coalesce(new_success, 0), coalesce(new_samples, 0),
			coalesce(legacy_success, 0), coalesce(legacy_samples, 0), resumed_at, coalesce(resumed_by, '')
		FROM rollout_halts`)
	if err != nil {
		return nil, fmt.Errorf("guard: reading the halts: %w", err)
	}
	for rows.Next() {
		var h Halt
		var haltedAt, resumedAt *time.Time
		var resumedBy string
		if err := rows.Scan(&h.Platform, &haltedAt, &h.Reason, &h.NewSuccess, &h.NewSamples, &h.LegacySuccess, &h.LegacySamples, &resumedAt, &resumedBy); err != nil {
			rows.Close()
			return nil, fmt.Errorf("guard: reading the halts: %w", err)
		}
		p := get(h.Platform)
		if haltedAt != nil {
			h.At = *haltedAt
			p.Halt = &h
		}
		p.ResumedAt, p.ResumedBy = resumedAt, resumedBy
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("guard: reading the halts: %w", err)
	}

	rows, err = db.Query(ctx, `SELECT o.platform, o.arm, sum(o.successes)::bigint, sum(o.failures)::bigint, sum(o.user_failures)::bigint
		FROM rollout_outcomes o LEFT JOIN rollout_halts h ON h.platform = o.platform
		WHERE o.bucket >= greatest(now() - $1::interval, h.resumed_at)
		GROUP BY o.platform, o.arm`, window)
	if err != nil {
		return nil, fmt.Errorf("guard: reading the window: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var platform, arm string
		var r Rate
		if err := rows.Scan(&platform, &arm, &r.Successes, &r.Failures, &r.UserFailures); err != nil {
			return nil, fmt.Errorf("guard: reading the window: %w", err)
		}
		if arm == string(flags.ArmNew) {
			get(platform).New = r
		} else {
			get(platform).Legacy = r
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("guard: reading the window: %w", err)
	}
	out := make([]Platform, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, *byName[name])
	}
	return out, nil
}

// Resume clears platform's halt, audited with who resumed it, and starts
// a fresh window there: from the start of the current 10 s bucket, whose
// outcomes so far are dropped (they were counted before the resume).
// ErrNotHalted when it is not halted.
func Resume(ctx context.Context, db vault.DB, platform, by string) (Halt, error) {
	var h Halt
	err := vault.InTx(ctx, db, func(tx pgx.Tx) error {
		// The old values are read under the row lock the UPDATE needs.
		err := tx.QueryRow(ctx, `SELECT halted_at, reason, new_success, new_samples, legacy_success, legacy_samples
			FROM rollout_halts WHERE platform = $1 AND halted_at IS NOT NULL FOR UPDATE`, platform).
			Scan(&h.At, &h.Reason, &h.NewSuccess, &h.NewSamples, &h.LegacySuccess, &h.LegacySamples)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotHalted
		}
		if err != nil {
			return err
		}
		h.Platform = platform
		if _, err := tx.Exec(ctx, `UPDATE rollout_halts SET halted_at = NULL, reason = NULL, new_success = NULL, new_samples = NULL,
				legacy_success = NULL, legacy_samples = NULL, resumed_at = `+currentBucket+`, resumed_by = $2 WHERE platform = $1`,
			platform, by); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM rollout_outcomes WHERE platform = $1 AND bucket >= `+currentBucket, platform); err != nil {
			return err
		}
		return vault.AppendAudit(ctx, tx, vault.Event{Platform: platform, Action: vault.ActionRolloutResumed, Status: vault.Success,
			Details: map[string]any{"by": by, "halted_at": h.At.UTC().Format(time.RFC3339), "reason": h.Reason}})
	})
	if errors.Is(err, ErrNotHalted) {
		return Halt{}, fmt.Errorf("%s: %w", platform, ErrNotHalted)
	}
	if err != nil {
		return Halt{}, fmt.Errorf("guard: resuming %s: %w", platform, err)
	}
	return h, nil
}
