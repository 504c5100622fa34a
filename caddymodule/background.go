package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// refreshOnlyRedirect stands in for the redirect URL of the providers the
// background workers use: a renewal never sends one, and the
// out-of-band URN can never be mistaken for a real callback.
const refreshOnlyRedirect = "urn:ietf:wg:oauth:2.0:oob"

// provisionBackground applies the defaults of the background options.
func (a *App) provisionBackground() error {
	if a.RefreshAhead <= 0 {
		a.RefreshAhead = caddy.Duration(worker.DefaultAhead)
	}
	if a.RefreshAheadShort <= 0 {
		a.RefreshAheadShort = caddy.Duration(worker.DefaultAheadShort)
	}
	if a.RefreshWorkers <= 0 {
		a.RefreshWorkers = worker.DefaultWorkers
	}
	if a.RefreshMaxAttempts <= 0 {
		a.RefreshMaxAttempts = vault.Backoff{}.Limit()
	}
	if a.RefreshLease <= 0 {
		a.RefreshLease = caddy.Duration(worker.DefaultLease)
	}
	if a.CleanupInterval <= 0 {
		a.CleanupInterval = caddy.Duration(worker.DefaultCleanupInterval)
	}
	switch a.Background {
	case "", "on", "off":
	default:
		return fmt.Errorf("credgate: background must be on or off, got %q", a.Background)
	}
	if a.RefreshAheadShort >= a.RefreshAhead {
		return fmt.Errorf("credgate: refresh_ahead_short (%s) must be shorter than refresh_ahead (%s)",
			time.Duration(a.RefreshAheadShort), time.Duration(a.RefreshAhead))
	}
	return nil
}

// provisionRefresher builds the providers the renewals use and the
// Refresher the workers, the token API and the handlers share.
func (a *App) provisionRefresher(repl *caddy.Replacer) error {
	providers := map[string]*oauth.Provider{}
	for name, pc := range a.Providers {
		p, err := a.buildProvider(name, pc, repl, refreshOnlyRedirect)
		if err != nil {
			return fmt.Errorf("credgate: provider %s: %w", name, err)
		}
		providers[name] = p
	}
	a.refresher = &worker.Refresher{
		DB: a.pool, Accounts: a.accounts, Providers: providers, Logger: a.logger.Named("refresh"), Now: a.now,
		Policy:  worker.Policy{Ahead: time.Duration(a.RefreshAhead), AheadShort: time.Duration(a.RefreshAheadShort)},
		Observe: a.metrics.Refresh, DecryptFailed: func(string) { a.health.DecryptFailed(telemetry.ViaRefresh) }, Tracer: a.tracer(), StoreRetry: time.Duration(a.StoreRetry),
	}
	return nil
}

// AppProviders builds the renewal providers of a credgate app's JSON
// config as the running app does (placeholders such as
// {env.TWITTER_CLIENT_SECRET} filled in), and returns its database_url:
// for the commands that act at the platforms (erase-user's revokes).
func AppProviders(raw json.RawMessage) (map[string]*oauth.Provider, string, error) {
	var app App
	if err := json.Unmarshal(raw, &app); err != nil {
		return nil, "", fmt.Errorf("the credgate app: %w", err)
	}
	app.run, app.tracing = new(appRun), telemetry.NewExport(nil)
	repl := caddy.NewReplacer()
	providers := map[string]*oauth.Provider{}
	for name, pc := range app.Providers {
		p, err := app.buildProvider(name, pc, repl, refreshOnlyRedirect)
		if err != nil {
			return nil, "", fmt.Errorf("provider %s: %w", name, err)
		}
		providers[name] = p
	}
	return providers, repl.ReplaceKnown(app.DatabaseURL, ""), nil
}

// buildProvider turns a provider block into an oauth.Provider on
// credgate's clock; defaultRedirect applies when redirect_url is unset.
func (a *App) buildProvider(name string, pc *ProviderConfig, repl *caddy.Replacer, defaultRedirect string) (*oauth.Provider, error) {
	cfg := oauth.Config{
		ClientID:     repl.ReplaceKnown(pc.ClientID, ""),
		ClientSecret: secret.New(repl.ReplaceKnown(pc.ClientSecret, "")),
		RedirectURL:  repl.ReplaceKnown(pc.RedirectURL, ""),
		Scopes:       pc.Scopes,
		AuthURL:      repl.ReplaceKnown(pc.AuthURL, ""),
		TokenURL:     repl.ReplaceKnown(pc.TokenURL, ""),
		APIBase:      repl.ReplaceKnown(pc.APIBase, ""),
		Timeout:      time.Duration(pc.Timeout),
		Generic:      oauth.GenericSettings{UserinfoURL: pc.UserinfoURL, RevokeURL: pc.RevokeURL, AuthStyle: pc.AuthStyle},
		Kind:         pc.Kind,
		Now:          a.now,
		Tracer:       a.tracer(),
	}
	if cfg.RedirectURL == "" {
		cfg.RedirectURL = defaultRedirect
	}
	if base := repl.ReplaceKnown(pc.Sandbox, ""); base != "" {
		auth, token, api, err := oauth.SandboxURLs(name, base)
		if err != nil {
			return nil, err
		}
		cfg.AuthURL, cfg.TokenURL, cfg.APIBase = auth, token, api
	}
	if cfg.ClientSecret.IsZero() {
		return nil, fmt.Errorf("client_secret is required")
	}
	return oauth.New(name, cfg)
}

// startBackground starts the loops unless background is off. They wait
// while the database is unavailable.
func (a *App) startBackground() {
	if a.Background == "off" {
		return
	}
	a.loops = &worker.Loops{
		Workers: &worker.Workers{
			Refresher: a.refresher, N: a.RefreshWorkers, Name: instanceName(), Lease: time.Duration(a.RefreshLease),
			Backoff: vault.Backoff{MaxAttempts: a.RefreshMaxAttempts}, Ready: a.Available,
		},
		CleanupInterval: time.Duration(a.CleanupInterval),
		OnCleanup:       a.metrics.StatesCleaned,
	}
	if a.webhook != nil {
		a.loops.Webhooks, a.loops.WebhookInterval = a.webhook.deliverer, time.Duration(a.webhook.cfg.PollInterval)
	}
	a.loops.Start()
}

// now is credgate's clock.
func (a *App) now() time.Time {
	if f := a.run.clock.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// setClock replaces credgate's clock; for tests that share a sandbox's
// movable clock.
func (a *App) setClock(now func() time.Time) { a.run.clock.Store(&now) }

// instanceName identifies this process in refresh job leases: host, pid
// and a random suffix, since one process may run two configs at once
// during a reload.
func instanceName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", h, os.Getpid(), oauth.RandomToken(4).Reveal())
}

// backgroundHealth says whether this instance runs the loops and when
// each last succeeded here.
func (a *App) backgroundHealth() map[string]any {
	if a.loops == nil {
		return map[string]any{"running": false}
	}
	last := map[string]any{}
	for name, at := range a.loops.LastRuns() {
		last[name] = at.UTC().Format(time.RFC3339)
	}
	return map[string]any{"running": true, "refresh_workers": a.RefreshWorkers, "last_runs": last}
}
