// Package caddymodule is the Caddy glue for credgate: the credgate app (the
// lifecycle of shared resources), its Caddyfile global option and the
// `caddy credgate …` commands. It parses configuration and maps results to
// Caddy; the logic it calls lives in the core packages.
package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
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

	databaseURL string
	masterKey   string
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
	return nil
}

// Start is a no-op until the app owns background work.
func (a *App) Start() error { return nil }

// Stop is a no-op until the app owns background work.
func (a *App) Stop() error { return nil }

// Interface guards.
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
