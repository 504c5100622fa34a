// Package caddymodule is the Caddy glue for credgate: the credgate app (the
// lifecycle of the database pool, the keyring and the flag provider), the
// credgate, credgate_tokens, credgate_egress and credgate_sandbox HTTP
// handlers and their Caddyfile syntax. It parses configuration, wires the
// core packages together and maps their results to HTTP; the logic lives
// in connect, vault, oauth, flags, guard, worker and sandbox, and the
// `caddy credgate …` commands in package commands (docs/architecture.md).
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/connect"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/internal/pgurl"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

func init() {
	caddy.RegisterModule(App{})
}

// pools shares one pgx pool per database URL across config reloads: Caddy
// starts the new config before it stops the old one, and the two must not
// each hold a full set of connections, nor close the pool under the other.
var pools = caddy.NewUsagePool()

// sharedPool is a pool plus the keyrings the database has accepted
// through it. A reloaded config with the same keys is available at once:
// Caddy may start the new HTTP server before the new credgate app, and
// flows in flight must not see a 503 for that.
type sharedPool struct {
	*pgxpool.Pool
	verified *sync.Map // keyring identity → true
}

func (p sharedPool) Destruct() error {
	p.Close()
	return nil
}

// App is the credgate app, configured by the `credgate` global option. It
// holds what every credgate handler shares: the database pool, the
// keyring, the provider settings and the rollout.
type App struct {
	// DatabaseURL is the PostgreSQL URL, normally "{env.DATABASE_URL}".
	// Required.
	DatabaseURL string `json:"database_url,omitempty"`

	// MasterKey is the base64 master key, normally
	// "{env.ENCRYPTION_MASTER_KEY}". Write the placeholder, not the key:
	// Caddy's admin API returns the config as written. Required.
	MasterKey string `json:"master_key,omitempty"`

	// MasterKeyID is the master key's id. Default 1.
	MasterKeyID string `json:"master_key_id,omitempty"`

	// PreviousKeys are decrypt-only keys, "id:base64,…", normally
	// "{env.ENCRYPTION_PREVIOUS_KEYS}". Default none.
	PreviousKeys string `json:"previous_keys,omitempty"`

	// StateTTL is how long an OAuth flow may take between start and
	// callback. Default 10m.
	StateTTL caddy.Duration `json:"state_ttl,omitempty"`

	// RefreshAhead is how long before expiry the background workers
	// renew a long-lived token (LinkedIn, Facebook, Instagram). Default
	// 72h (the guide's "refresh tokens expiring in 3 days").
	RefreshAhead caddy.Duration `json:"refresh_ahead,omitempty"`

	// RefreshAheadShort is the same for short-lived tokens, whose whole
	// lifetime is no longer than refresh_ahead (Twitter/X's 2 hours).
	// Default 15m.
	RefreshAheadShort caddy.Duration `json:"refresh_ahead_short,omitempty"`

	// RefreshWorkers is how many renewals this instance runs at once.
	// Default 4.
	RefreshWorkers int `json:"refresh_workers,omitempty"`

	// RefreshMaxAttempts marks a refresh job dead after this many failed
	// attempts (retried with capped exponential backoff). Default 8.
	RefreshMaxAttempts int `json:"refresh_max_attempts,omitempty"`

	// RefreshLease is how long a claimed refresh job belongs to one
	// instance before another may take it over (an instance that died
	// mid-job). Default 2m.
	RefreshLease caddy.Duration `json:"refresh_lease,omitempty"`

	// StoreRetry is how long storing a token the platform has already
	// issued is retried on fresh connections after it failed (a database
	// restart or failover, a broken path to it): the answer is kept in
	// memory meanwhile, and no one renews the account again. Default 5m.
	StoreRetry caddy.Duration `json:"store_retry,omitempty"`

	// CleanupInterval is how often expired OAuth states are deleted.
	// Default 5m.
	CleanupInterval caddy.Duration `json:"cleanup_interval,omitempty"`

	// Background is "on" (the default) or "off": whether this instance
	// runs the refresh workers, the scheduler, the cleanup and the audit
	// roll-up. Every replica may run them; "off" suits a replica that
	// should only serve requests.
	Background string `json:"background,omitempty"`

	// Providers configures each platform by name (twitter, linkedin,
	// facebook, instagram, generic, or a name of your own with kind
	// generic).
	Providers map[string]*ProviderConfig `json:"providers,omitempty"`

	// DecisionTimeout bounds a rollout decision at the app's connect
	// route; past it the user goes to the legacy flow (reason timeout).
	// Default 100ms.
	DecisionTimeout caddy.Duration `json:"decision_timeout,omitempty"`

	// FlagsRaw is the rollout's flag provider, a module in the
	// credgate.flags namespace (flagd, flagd_rpc, static, or one of your
	// own). Default: none, which keeps every user on the legacy flow.
	FlagsRaw json.RawMessage `json:"flags,omitempty" caddy:"namespace=credgate.flags inline_key=provider"`

	// AllowMissingKeys starts credgate even though some credentials are
	// sealed with key ids that neither master_key nor previous_keys hold.
	// Those accounts are reported undecryptable. Default false: such a
	// start is refused, naming the missing ids.
	AllowMissingKeys bool `json:"allow_missing_keys,omitempty"`

	// Guard, when set, halts a platform's new starts by itself when the
	// new flow's success rate falls below its line, until an operator
	// resumes it. Default: off.
	Guard *GuardConfig `json:"guard,omitempty"`

	// AuditReadWindow is how long this instance counts the back end's
	// token reads (token API and egress) before it writes their audit
	// rows: one per account, caller and outcome, with the count, and one
	// without a user id for ids that have no account. Written again at
	// stop. From 1s to 1h; default 1m.
	AuditReadWindow caddy.Duration `json:"audit_read_window,omitempty"`

	// Webhook, when set, tells the app about its users' accounts
	// (connected, disconnected, expiring, needs_reauth, revoked,
	// refresh_failed): signed POSTs from an outbox in PostgreSQL.
	// Default: off (no event is written).
	Webhook *WebhookConfig `json:"webhook,omitempty"`

	keys     *vault.Keyring
	pool     *pgxpool.Pool
	shared   sharedPool
	poolKey  string
	rollout  *flags.Rollout
	guard    *guard.Guard
	logger   *zap.Logger
	accounts *vault.Accounts
	settings *vault.SettingsCache
	// pooler is what database_url connects through (pgurl.Pooler).
	pooler pgurl.PoolerMode
	// backendReads counts the back end's token reads (token API,
	// egress) for every replica's view of whether it reads through
	// credgate yet.
	backendReads *vault.BackendReads
	// readAudit counts the back end's token reads into their audit rows
	// (one per account, caller and outcome per AuditReadWindow).
	readAudit *vault.ReadAudit
	states    *vault.States
	// flagSource, when the flag provider can say, reports where the
	// rollout comes from and whether it is in force.
	flagSource flagSource
	refresher  *worker.Refresher
	// flows runs the connect and disconnect steps; its Audit writes the
	// audit rows of requests that may be gone (connect.Auditor).
	flows *connect.Flows
	loops *worker.Loops
	// webhook is the configured webhook, nil without one.
	webhook *webhookRun
	metrics *telemetry.Metrics
	health  *telemetry.Health
	tracing *telemetry.Export
	// holdsTelemetry is true once this config took the shared metrics
	// and providers.
	holdsTelemetry bool

	run *appRun
}

// appRun is the app's running state, behind a pointer because Caddy
// copies module values.
type appRun struct {
	// exposure: the config's public origins and weak secrets, refused
	// together at Start.
	exposure secret.Exposure
	// available is true once the database answered and the key
	// fingerprints matched; credgate routes answer 503 until then.
	available atomic.Bool
	// databaseWatch finds PostgreSQL not answering: credgate routes then
	// answer 503 at once instead of each waiting for its own timeout.
	databaseWatch *worker.DatabaseWatch
	// missingKeys are the key ids in use the keyring lacks (only with
	// allow_missing_keys), as of the last key check.
	missingKeys atomic.Pointer[[]uint32]
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	// clock, when set, replaces time.Now as credgate's clock (tests that
	// move a sandbox's clock forward share it with credgate).
	clock atomic.Pointer[func() time.Time]
	// tracing, when set, replaces the shared tracer provider (tests).
	tracing atomic.Pointer[telemetry.Export]
}

// ProviderConfig is one platform's app registration.
type ProviderConfig struct {
	// ClientID is the app's client id at the platform. Required.
	ClientID string `json:"client_id,omitempty"`
	// ClientSecret, normally a placeholder such as
	// "{env.TWITTER_CLIENT_SECRET}". Required.
	ClientSecret string `json:"client_secret,omitempty"`
	// RedirectURL is the callback registered at the platform. Default:
	// <public_origin>/api/auth/oauth/<platform>/callback.
	RedirectURL string `json:"redirect_url,omitempty"`
	// Scopes default to the platform's (see docs/providers.md).
	Scopes []string `json:"scopes,omitempty"`
	// Sandbox, if set, points every URL at a credgate sandbox at this
	// base URL.
	Sandbox string `json:"sandbox,omitempty"`
	// AuthURL, TokenURL and APIBase override single URLs.
	AuthURL  string `json:"auth_url,omitempty"`
	TokenURL string `json:"token_url,omitempty"`
	APIBase  string `json:"api_base,omitempty"`
	// UserinfoURL and RevokeURL configure the generic profile.
	UserinfoURL string `json:"userinfo_url,omitempty"`
	RevokeURL   string `json:"revoke_url,omitempty"`
	// Kind is "generic" for a provider with a name of its own (several
	// generic providers, each with its routes /api/auth/oauth/<name>).
	Kind string `json:"kind,omitempty"`
	// AuthStyle is how a generic provider authenticates the client at
	// the token and revoke endpoints: "basic" (client_secret_basic),
	// "post" (client_secret_post) or "auto" (the default: basic, then
	// post, remembering what worked).
	AuthStyle string `json:"auth_style,omitempty"`
	// Timeout bounds each call to the platform. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// LegacyCallback and LegacyStart override the handler's legacy path
	// patterns for this platform.
	LegacyCallback string `json:"legacy_callback,omitempty"`
	LegacyStart    string `json:"legacy_start,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "credgate",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision validates the configuration and builds the keyring, the flag
// provider and the (lazy) database pool. It touches no network, because it
// also runs for `caddy validate`; a bad key fails here, closed.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.run = &appRun{databaseWatch: &worker.DatabaseWatch{Logger: a.logger}}
	repl := caddy.NewReplacer()
	databaseURL := repl.ReplaceKnown(a.DatabaseURL, "")
	if a.StateTTL <= 0 {
		a.StateTTL = caddy.Duration(vault.DefaultStateTTL)
	}
	if err := a.provisionBackground(); err != nil {
		return err
	}

	a.warnLiteral("credgate", "master_key", a.MasterKey)
	a.warnLiteral("credgate", "previous_keys", a.PreviousKeys)
	for name, pc := range a.Providers {
		a.warnLiteral("credgate provider "+name, "client_secret", pc.ClientSecret)
	}
	keyCfg := vault.KeyConfig{
		MasterKey:    repl.ReplaceKnown(a.MasterKey, ""),
		PreviousKeys: repl.ReplaceKnown(a.PreviousKeys, ""),
	}
	if id := repl.ReplaceKnown(a.MasterKeyID, ""); id != "" {
		n, err := vault.ParseKeyID(id)
		if err != nil {
			return fmt.Errorf("credgate: master_key_id %q: %w", id, err)
		}
		keyCfg.MasterKeyID = n
	}
	keys, err := vault.NewKeyring(keyCfg)
	if err != nil {
		return fmt.Errorf("credgate: %w", err)
	}
	a.keys = keys
	a.accounts, a.states = vault.NewAccounts(keys), vault.NewStates(keys)

	if strings.TrimSpace(databaseURL) == "" {
		// pgurl's own message names the commands' --database-url flag,
		// which `caddy run` does not have.
		return fmt.Errorf("credgate: database_url is empty: set it in the credgate global options (database_url {env.DATABASE_URL}) and make sure the variable it names is set")
	}
	poolCfg, err := pgurl.Parse(databaseURL)
	if err != nil {
		return fmt.Errorf("credgate: database_url: %w", err)
	}
	// A request must not wait long for a database that does not answer
	// (a partition: connections hang rather than being refused). A
	// connect_timeout in the URL wins.
	if !strings.Contains(databaseURL, "connect_timeout") {
		poolCfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	// Each running renewal holds a connection while it waits for the
	// platform; requests need theirs too.
	if !strings.Contains(databaseURL, "pool_max_conns") {
		poolCfg.MaxConns = max(poolCfg.MaxConns, int32(a.RefreshWorkers+8))
	}
	// Sessions that cannot hold locks forever when the path to the
	// database breaks (docs/background.md, "Faults"); behind a
	// transaction pooler, the same timeouts set in each transaction.
	pooler, _ := pgurl.Pooler(databaseURL) // Parse accepted it
	limits := pgurl.LimitSessions(poolCfg, pooler)
	a.pooler = pooler
	a.poolKey = databaseURL
	shared, _, err := pools.LoadOrNew(a.poolKey, func() (caddy.Destructor, error) {
		p, err := pgurl.NewPool(context.Background(), poolCfg, limits) // connects lazily
		return sharedPool{Pool: p, verified: new(sync.Map)}, err
	})
	if err != nil {
		return fmt.Errorf("credgate: database pool: %w", err)
	}
	a.shared = shared.(sharedPool)
	a.pool = a.shared.Pool
	a.run.databaseWatch.Pool = a.pool
	// The operator's settings for sharing social_accounts with the app
	// (transition mode, app-refresh, the app's expiry column), read by
	// every replica from the database.
	a.settings = &vault.SettingsCache{DB: a.pool}
	a.accounts.UseSettings(a.settings)
	a.backendReads = new(vault.BackendReads)
	if a.AuditReadWindow == 0 {
		a.AuditReadWindow = caddy.Duration(vault.DefaultReadWindow)
	}
	if w := time.Duration(a.AuditReadWindow); w < time.Second || w > time.Hour {
		return fmt.Errorf("credgate: audit_read_window must be from 1s to 1h, got %s", w)
	}
	a.readAudit = &vault.ReadAudit{Window: time.Duration(a.AuditReadWindow)}
	if _, ok := a.shared.verified.Load(keys.Identity()); ok {
		a.run.available.Store(true)
	}

	provider, err := flags.Static(0)
	if err != nil {
		return err
	}
	if a.FlagsRaw != nil {
		mod, err := ctx.LoadModule(a, "FlagsRaw")
		if err != nil {
			return fmt.Errorf("credgate: loading flag provider: %w", err)
		}
		fp, ok := mod.(FlagProvider)
		a.flagSource, _ = mod.(flagSource)
		if !ok {
			return fmt.Errorf("credgate: flag provider module %T does not implement caddymodule.FlagProvider", mod)
		}
		if provider, err = fp.OpenFeatureProvider(); err != nil {
			return fmt.Errorf("credgate: %w", err)
		}
	}
	a.rollout = flags.NewRollout(provider, flags.WithDecisionTimeout(time.Duration(a.DecisionTimeout)), flags.WithHalts(a.halted))
	if err := a.provisionGuard(); err != nil {
		return err
	}
	if err := a.provisionTelemetry(ctx); err != nil {
		return fmt.Errorf("credgate: telemetry: %w", err)
	}
	// The token API's and egress's series too start at zero, so that the
	// first of each outcome counts.
	a.metrics.PrepareTokenReads(a.platforms(), answer.TokenReadOutcomes())
	a.metrics.PrepareEgress(a.platforms(), answer.EgressClasses())
	if err := a.provisionWebhook(ctx, repl); err != nil {
		return err
	}
	if err := a.provisionRefresher(repl); err != nil {
		return err
	}
	a.provisionFlows()
	return nil
}

// provisionFlows builds the connect steps (package connect) on this
// config's pool, keyring and renewals, counting each finished flow for
// the metrics and the guard (flowFinished).
func (a *App) provisionFlows() {
	a.flows = &connect.Flows{
		DB: a.pool, Keys: a.keys, States: a.states, Accounts: a.accounts, Renewals: a.refresher,
		Audit: connect.NewAuditor(a.pool, a.logger), Tracer: a.tracer(), Logger: a.logger, Finished: a.flowFinished,
		DecryptFailed: a.health.DecryptFailed,
	}
}

// Start starts the flag provider in the background and checks the
// database. A key whose fingerprint does not match the one recorded in the
// database stops Caddy from starting (fail closed). An unreachable
// database does not: pass-through traffic flows, credgate routes answer
// 503, and a background loop keeps trying.
func (a *App) Start() error {
	if err := a.run.exposure.Check(); err != nil {
		return err
	}
	if err := a.rollout.Start(context.Background()); err != nil {
		return fmt.Errorf("credgate: starting flag provider: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.run.cancel = cancel
	err := a.checkDatabase(ctx, 3*time.Second)
	if err == nil {
		// Only a database that answered can say the outbox is missing.
		err = a.checkWebhookOutbox(ctx)
	}
	if refusedKeys(err) || errors.Is(err, vault.ErrNoOutbox) {
		cancel()
		// Caddy does not Stop an app whose Start failed: release the flag
		// provider here.
		closeCtx, closeCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer closeCancel()
		a.rollout.Close(closeCtx)
		return fmt.Errorf("credgate: %w", err)
	}
	if hint := dberr.PoolerHint(err); hint != "" {
		// Not an outage: every statement would fail the same way.
		a.logger.Error("the database refuses credgate's connections as configured; credgate routes answer 503 until the URL is fixed: "+hint, zap.Error(err))
	} else if err != nil {
		a.logger.Warn("database unavailable; credgate routes answer 503 until it is back", zap.Error(err))
	}
	if err != nil {
		a.run.wg.Go(func() { a.reconnect(ctx) })
	}
	a.startBackground()
	a.startGuard(ctx)
	a.run.wg.Go(func() { a.backendReads.Run(ctx, a.pool, guardInterval) })
	a.run.wg.Go(func() {
		a.readAudit.Run(ctx, a.pool, func(err error) {
			a.logger.Warn("token read audit rows not written yet; their counts are kept for the next window", zap.Error(err))
		})
	})
	a.run.wg.Go(func() { a.run.databaseWatch.Run(ctx) })
	return nil
}

// checkDatabase pings and verifies the key fingerprints.
func (a *App) checkDatabase(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	missing, err := a.keys.VerifyFingerprints(ctx, a.pool, vault.VerifyOptions{AllowMissingKeys: a.AllowMissingKeys})
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		a.logger.Warn("credentials sealed with keys this keyring does not hold are undecryptable (allow_missing_keys)",
			zap.Uint32s("missing_key_ids", missing))
	}
	a.run.missingKeys.Store(&missing)
	a.shared.verified.Store(a.keys.Identity(), true)
	a.run.available.Store(true)
	return nil
}

// keyringHealth is the keyring's part of service-health: the primary id,
// and the key ids in use it lacks (only with allow_missing_keys, which
// accepted them: the instance stays healthy, but says so).
func (a *App) keyringHealth() map[string]any {
	out := map[string]any{"ok": true, "primary_key_id": a.keys.PrimaryID()}
	if m := a.run.missingKeys.Load(); m != nil && len(*m) > 0 {
		out["missing_key_ids"] = *m
		out["warning"] = "credentials sealed with these key ids are undecryptable (allow_missing_keys); add the keys to previous_keys"
	}
	return out
}

// refusedKeys reports whether err is the key check refusing the keyring
// (a wrong key, or keys missing for credentials in use): never serve then.
func refusedKeys(err error) bool {
	return errors.Is(err, vault.ErrKeyMismatch) || errors.Is(err, vault.ErrMissingKeys)
}

// reconnect retries the database with capped backoff until it answers.
func (a *App) reconnect(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			a.logger.Error("database reconnect loop panicked", zap.Any("panic", r))
		}
	}()
	delay := 500 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		err := a.checkDatabase(ctx, 3*time.Second)
		switch {
		case err == nil:
			a.logger.Info("database available; credgate routes are serving")
			return
		case refusedKeys(err):
			// Never serve with the wrong key: stay unavailable, loudly.
			a.logger.Error("refusing to serve credgate routes", zap.Error(err))
			return
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// Stop ends the background work and the flag provider within a bounded
// wait.
func (a *App) Stop() error {
	if a.run.cancel != nil {
		a.run.cancel()
	}
	a.run.wg.Wait()
	if a.loops != nil {
		a.loops.Stop(10 * time.Second)
	}
	if a.refresher != nil && !a.refresher.Wait(10*time.Second) {
		a.logger.Error("stopping with renewed tokens still unstored (the database is not answering); their grants may be lost")
	}
	if a.flows != nil && !a.flows.Audit.Wait(10*time.Second) {
		a.logger.Error("stopping with audit rows still unwritten (the database is not answering); the log lines before name each")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.rollout.Close(ctx)
}

// Cleanup releases this config's hold on the shared pool; the last config
// to let go closes it. It copes with a Provision that failed half-way.
func (a *App) Cleanup() error {
	if a.holdsTelemetry {
		telemetryPool.Delete(telemetryKey)
	}
	if a.pool != nil {
		_, err := pools.Delete(a.poolKey)
		return err
	}
	return nil
}

// flagSource is a flag provider module that reports its source's state
// for service-health.
type flagSource interface{ SourceState() map[string]any }

// credgateApp is the credgate app a handler (named who, for the error)
// works with.
func credgateApp(ctx caddy.Context, who string) (*App, error) {
	app, err := ctx.App("credgate")
	if err != nil {
		return nil, fmt.Errorf("%s: the credgate global option is needed: %w", who, err)
	}
	return app.(*App), nil
}

// Available reports whether credgate routes can use the database: the key
// check has passed, and the database watch last found it answering.
func (a *App) Available() bool { return a.run.available.Load() && !a.run.databaseWatch.Down() }

// connectTimeout bounds a new connection: on a loaded machine a dial,
// TLS and authentication may take a while, and slow is not down.
const connectTimeout = 5 * time.Second

// Rollout is the app's rollout decision.
func (a *App) Rollout() *flags.Rollout { return a.rollout }

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
