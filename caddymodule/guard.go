package caddymodule

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
)

// GuardConfig is the `guard` option: the rollout halts a platform's new
// starts by itself when the new flow's success rate falls below the line
// (see package guard). Unset fields take the defaults.
type GuardConfig struct {
	// MinSuccess is the lowest acceptable new-arm success rate. Default
	// 0.95; 0 turns the absolute floor off (the gap still applies).
	MinSuccess *float64 `json:"min_success,omitempty"`
	// MaxGap is how far below the legacy arm's rate the new arm may fall.
	// Default 0.05; 0 allows no gap.
	MaxGap *float64 `json:"max_gap,omitempty"`
	// MinSamples is how many new-arm outcomes the window needs before the
	// guard judges. Default 50.
	MinSamples int64 `json:"min_samples,omitempty"`
	// Window is the sliding window. Default 10m.
	Window caddy.Duration `json:"window,omitempty"`
}

// Config is the guard's settings, the defaults filled in.
func (c *GuardConfig) Config() guard.Config {
	cfg := guard.DefaultConfig()
	if c.MinSuccess != nil {
		cfg.MinSuccess = *c.MinSuccess
	}
	if c.MaxGap != nil {
		cfg.MaxGap = *c.MaxGap
	}
	if c.MinSamples != 0 {
		cfg.MinSamples = c.MinSamples
	}
	if c.Window != 0 {
		cfg.Window = time.Duration(c.Window)
	}
	return cfg
}

// guardInterval is how often each instance adds its outcomes to the
// shared window and reads the halts: a halt latched by one replica holds
// in the others within this long.
const guardInterval = time.Second

// provisionGuard builds the guard when it is configured.
func (a *App) provisionGuard() error {
	if a.Guard == nil {
		return nil
	}
	cfg := a.Guard.Config()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("credgate: %w", err)
	}
	// A user's own failures count once per guard window.
	a.rollout.Outcomes().UserWindow = cfg.Window
	a.guard = guard.New(a.pool, cfg, a.rollout.Outcomes(), a.platforms(), guard.WithLogger(a.logger.Named("guard")))
	return nil
}

// halted is the rollout's view of the guard: false when there is none.
func (a *App) halted(platform string) bool { return a.guard != nil && a.guard.Halted(platform) }

// startGuard reads the halts once before serving (until then every
// platform counts as halted) and runs the guard's loop until Stop.
func (a *App) startGuard(ctx context.Context) {
	// The decisions are shared with or without the guard: `rollout
	// status` shows them by reason.
	decisions := guard.NewDecisionLog(a.pool, a.rollout.Counts())
	a.run.wg.Go(func() { decisions.Run(ctx, guardInterval) })
	if a.guard == nil {
		// The outcomes too: `rollout status` shows the window whether or
		// not the guard judges it (the guard flushes them itself).
		outcomes := guard.NewOutcomeLog(a.pool, a.rollout.Outcomes())
		a.run.wg.Go(func() { outcomes.Run(ctx, guardInterval) })
		return
	}
	if a.Available() {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := a.guard.Tick(tctx); err != nil {
			a.logger.Warn("rollout guard could not read the halts at start; new starts stay on the legacy flow until it can", zap.Error(err))
		}
		cancel()
	}
	a.run.wg.Go(func() { a.guard.Run(ctx, guardInterval) })
}

// parseGuard parses `guard [{ min_success … max_gap … min_samples …
// window … }]`.
func parseGuard(d *caddyfile.Dispenser) (*GuardConfig, error) {
	g := new(GuardConfig)
	if d.NextArg() {
		return nil, d.Err("credgate: guard takes a block, not arguments: guard { min_success 0.95 … }")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var raw string
		if !d.AllArgs(&raw) {
			return nil, d.Errf("credgate: guard %s takes one value", opt)
		}
		switch opt {
		case "min_success", "max_gap":
			f, err := strconv.ParseFloat(raw, 64)
			if err != nil || f < 0 || f > 1 {
				return nil, d.Errf("credgate: guard %s must be a number from 0 to 1, got %q", opt, raw)
			}
			*map[string]**float64{"min_success": &g.MinSuccess, "max_gap": &g.MaxGap}[opt] = &f
		case "min_samples":
			n, err := strconv.ParseInt(raw, 10, 64)
			if err != nil || n < 1 {
				return nil, d.Errf("credgate: guard min_samples must be a whole number from 1, got %q", raw)
			}
			g.MinSamples = n
		case "window":
			dur, err := caddy.ParseDuration(raw)
			if err != nil || dur < time.Minute {
				return nil, d.Errf("credgate: guard window must be a duration of at least 1m, got %q", raw)
			}
			g.Window = caddy.Duration(dur)
		default:
			return nil, d.Errf("credgate: unrecognized guard option %q (min_success, max_gap, min_samples, window)", opt)
		}
	}
	return g, nil
}

// exactPercentages replaces the sampled percentages in status with the
// flag file's rule read exactly, as `rollout status` does, when the
// source is a flag file credgate has loaded (it is ready) whose rule can
// be read statically; otherwise the sample stays, marked as one.
func (a *App) exactPercentages(ctx context.Context, status []guard.RolloutStatus) {
	file, ok := a.flagSource.(*FlagdFileFlags)
	if !ok || !a.rollout.Ready() {
		return
	}
	path, err := file.ResolvedPath()
	if err != nil {
		return
	}
	_, data, err := flags.ReadFile(path)
	if err != nil {
		return
	}
	names := make([]string, len(status))
	for i, s := range status {
		names[i] = s.Platform
	}
	exact, err := flags.FileInForce(ctx, data, names)
	if err != nil {
		return
	}
	for i := range status {
		if status[i].Flags != nil && exact[i].Problem == "" {
			status[i].Flags = &exact[i]
		}
	}
}
