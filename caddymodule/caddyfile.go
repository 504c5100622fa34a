package caddymodule

import (
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/credgate/credgate/oauth"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("credgate", parseGlobalOption)
}

// parseGlobalOption sets up the credgate app from the global options block.
// Syntax:
//
//	{
//		credgate {
//			database_url <url>
//			master_key   <base64 key>
//			master_key_id <id>            # default 1
//			previous_keys <id:base64,…>   # decrypt-only, during a rotation
//			allow_missing_keys            # start although credentials use key ids the keyring lacks (they become undecryptable)
//			state_ttl     <duration>      # default 10m
//			refresh_ahead <duration>      # default 72h: long-lived tokens renewed this long before expiry
//			refresh_ahead_short <duration> # default 15m: short-lived tokens (Twitter/X's 2 h)
//			refresh_workers <n>           # default 4: renewals this instance runs at once
//			refresh_max_attempts <n>      # default 8: then the job is dead (audited)
//			refresh_lease <duration>      # default 2m: a dead instance's jobs are retaken after this
//			store_retry <duration>        # default 5m: how long a token the platform issued is retried into the database
//			cleanup_interval <duration>   # default 5m: expired OAuth states deleted
//			background on|off             # default on: run the loops on this instance
//			flags         flagd <path> | flagd_rpc <host:port> [tls <ca.pem>] | static <percent>
//			decision_timeout <duration>   # default 100ms: past it, the user goes legacy (reason timeout)
//			audit_read_window <duration>  # default 1m (1s–1h): the back end's token reads, one audit row per account, caller and outcome per window
//			guard {                       # default off: halt a platform's new starts when the new flow does badly
//				min_success <0–1>           # default 0.95
//				max_gap     <0–1>           # default 0.05: below the legacy arm's rate minus this also halts
//				min_samples <n>             # default 50: new-flow outcomes in the window before judging
//				window      <duration>      # default 10m, sliding, shared by replicas
//			}
//			webhook <url> {              # default off: tell the app about its users' accounts (docs/webhooks.md)
//				secret          <secret>     # required, 24+ characters: HMAC-SHA256 over "<timestamp>.<body>"
//				previous_secret <secret>     # also signed with while the app rotates (repeatable)
//				events          <kind…>      # default all: connected disconnected expiring needs_reauth revoked refresh_failed
//				timeout         <duration>   # default 10s per attempt
//				retry_for       <duration>   # default 24h, then the event is kept as failed
//				retry_backoff   <first> <max> # default 5s 1m
//				poll_interval   <duration>   # default 1s
//			}
//			provider <twitter|linkedin|facebook|instagram|generic|your-name> {
//				kind          generic       # required for a name of your own: /api/auth/oauth/<your-name>
//				auth_style    basic|post|auto # generic: client_secret_basic, _post, or try basic then post (default auto)
//				client_id     <id>
//				client_secret <secret>
//				redirect_url  <url>         # default <public_origin>/api/auth/oauth/<platform>/callback
//				scopes        <scope…>
//				sandbox       <base url>    # point every URL at a credgate sandbox
//				auth_url | token_url | api_base | userinfo_url | revoke_url <url>
//				timeout       <duration>    # default 10s
//				legacy_callback <path>      # override the handler's pattern
//				legacy_start    <path>
//			}
//		}
//	}
//
// Use placeholders such as {env.DATABASE_URL} and {env.ENCRYPTION_MASTER_KEY}
// so the secrets stay out of the config file.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if existing != nil {
		return nil, d.Err("credgate: the global option may appear only once")
	}
	d.Next() // the option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "database_url":
			if !d.AllArgs(&app.DatabaseURL) {
				return nil, d.ArgErr()
			}
		case "master_key":
			if !d.AllArgs(&app.MasterKey) {
				return nil, d.ArgErr()
			}
		case "master_key_id":
			if !d.AllArgs(&app.MasterKeyID) {
				return nil, d.ArgErr()
			}
		case "previous_keys":
			if !d.AllArgs(&app.PreviousKeys) {
				return nil, d.ArgErr()
			}
		case "state_ttl", "refresh_ahead", "refresh_ahead_short", "refresh_lease", "store_retry", "cleanup_interval", "decision_timeout",
			"audit_read_window":
			opt := d.Val()
			dur, err := parseDurationArg(d, opt)
			if err != nil {
				return nil, err
			}
			*map[string]*caddy.Duration{"state_ttl": &app.StateTTL, "refresh_ahead": &app.RefreshAhead,
				"refresh_ahead_short": &app.RefreshAheadShort, "refresh_lease": &app.RefreshLease, "store_retry": &app.StoreRetry,
				"cleanup_interval": &app.CleanupInterval, "decision_timeout": &app.DecisionTimeout,
				"audit_read_window": &app.AuditReadWindow}[opt] = caddy.Duration(dur)
		case "refresh_workers", "refresh_max_attempts":
			opt := d.Val()
			var raw string
			if !d.AllArgs(&raw) {
				return nil, d.ArgErr()
			}
			n, err := strconv.Atoi(raw)
			if err != nil || n < 1 || n > 256 {
				return nil, d.Errf("credgate: %s must be a whole number from 1 to 256, got %q", opt, raw)
			}
			*map[string]*int{"refresh_workers": &app.RefreshWorkers, "refresh_max_attempts": &app.RefreshMaxAttempts}[opt] = n
		case "allow_missing_keys":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			app.AllowMissingKeys = true
		case "background":
			if !d.AllArgs(&app.Background) {
				return nil, d.ArgErr()
			}
			if app.Background != "on" && app.Background != "off" {
				return nil, d.Errf("credgate: background must be on or off, got %q", app.Background)
			}
		case "provider":
			var name string
			if !d.AllArgs(&name) {
				return nil, d.Err("credgate: provider takes a platform name: twitter, linkedin, facebook, instagram, generic, or a name of your own with `kind generic`")
			}
			if _, dup := app.Providers[name]; dup {
				return nil, d.Errf("credgate: provider %s is configured twice", name)
			}
			pc, err := parseProvider(d)
			if err != nil {
				return nil, err
			}
			if pc.Kind == "" && !slices.Contains(oauth.Platforms, name) && name != "generic" {
				return nil, d.Errf("credgate: unknown platform %q: use twitter, linkedin, facebook, instagram or generic, or add `kind generic` to name a provider of your own", name)
			}
			if app.Providers == nil {
				app.Providers = map[string]*ProviderConfig{}
			}
			app.Providers[name] = pc
		case "flags":
			if !d.NextArg() {
				return nil, d.Err("credgate: flags needs a provider: flagd <path>, flagd_rpc <host:port> or static <percent>")
			}
			// The provider's unmarshaler gets "<name> <args…>".
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "credgate.flags."+name)
			if err != nil {
				return nil, err
			}
			app.FlagsRaw = caddyconfig.JSONModuleObject(unm, "provider", name, nil)
		case "webhook":
			if app.Webhook != nil {
				return nil, d.Err("credgate: webhook may appear only once")
			}
			w, err := parseWebhook(d)
			if err != nil {
				return nil, err
			}
			app.Webhook = w
		case "guard":
			g, err := parseGuard(d)
			if err != nil {
				return nil, err
			}
			app.Guard = g
		default:
			return nil, d.Errf("credgate: unrecognized option %q", d.Val())
		}
	}
	return httpcaddyfile.App{
		Name:  "credgate",
		Value: caddyconfig.JSON(app, nil),
	}, nil
}

func parseProvider(d *caddyfile.Dispenser) (*ProviderConfig, error) {
	pc := new(ProviderConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		target := map[string]*string{
			"client_id": &pc.ClientID, "client_secret": &pc.ClientSecret, "redirect_url": &pc.RedirectURL,
			"sandbox": &pc.Sandbox, "auth_url": &pc.AuthURL, "token_url": &pc.TokenURL, "api_base": &pc.APIBase,
			"userinfo_url": &pc.UserinfoURL, "revoke_url": &pc.RevokeURL,
			"legacy_callback": &pc.LegacyCallback, "legacy_start": &pc.LegacyStart,
			"kind": &pc.Kind, "auth_style": &pc.AuthStyle,
		}[opt]
		switch {
		case target != nil:
			if !d.AllArgs(target) {
				return nil, d.ArgErr()
			}
		case opt == "scopes":
			pc.Scopes = d.RemainingArgs()
			if len(pc.Scopes) == 0 {
				return nil, d.ArgErr()
			}
		case opt == "timeout":
			dur, err := parseDurationArg(d, opt)
			if err != nil {
				return nil, err
			}
			pc.Timeout = caddy.Duration(dur)
		default:
			return nil, d.Errf("credgate: unrecognized provider option %q", opt)
		}
	}
	return pc, nil
}
