// Package caddymodule is the Caddy glue for credgate: the credgate app (the
// lifecycle of shared resources), its Caddyfile global option and the
// `caddy credgate …` commands. It parses configuration and maps results to
// Caddy; the logic it calls lives in the core packages.
package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/credgate/credgate/flags"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the credgate app. It holds what every credgate handler in the
// config shares: the database and the keyring.
type App struct {
	// DatabaseURL is the PostgreSQL URL, for example
	// "{env.DATABASE_URL}". Placeholders are expanded at provision.
	// Required once handlers use the database.
	DatabaseURL string `json:"database_url,omitempty"`

	// MasterKey is the base64 master key, normally "{env.ENCRYPTION_MASTER_KEY}".
	// Write the placeholder, not the key: Caddy's admin API returns the
	// config as written.
	MasterKey string `json:"master_key,omitempty"`

	// FlagsRaw is the rollout's flag provider, a module in the
	// credgate.flags namespace (flagd, flagd_rpc, static, or one of your
	// own). Default: none, which keeps every user on the legacy flow.
	FlagsRaw json.RawMessage `json:"flags,omitempty" caddy:"namespace=credgate.flags inline_key=provider"`

	databaseURL string
	masterKey   string
	rollout     *flags.Rollout
	logger      *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "credgate",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision expands placeholders. It touches no network, because it also
// runs for `caddy validate`.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	a.databaseURL = repl.ReplaceKnown(a.DatabaseURL, "")
	a.masterKey = repl.ReplaceKnown(a.MasterKey, "")

	provider, err := flags.Static(0)
	if a.FlagsRaw != nil {
		mod, err := ctx.LoadModule(a, "FlagsRaw")
		if err != nil {
			return fmt.Errorf("loading flag provider: %w", err)
		}
		fp, ok := mod.(FlagProvider)
		if !ok {
			return fmt.Errorf("flag provider module %T does not implement caddymodule.FlagProvider", mod)
		}
		provider, err = fp.OpenFeatureProvider()
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	a.rollout = flags.NewRollout(provider)
	return nil
}

// Start initialises the flag provider in the background: until it is
// ready, every user stays on the legacy flow.
func (a *App) Start() error {
	return a.rollout.Start(context.Background())
}

// Stop shuts the flag provider down, within a bounded wait.
func (a *App) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.rollout.Close(ctx)
}

// Rollout is the app's rollout decision.
func (a *App) Rollout() *flags.Rollout { return a.rollout }

// Interface guards.
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
