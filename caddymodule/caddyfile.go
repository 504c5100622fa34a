package caddymodule

import (
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
//			state_ttl     <duration>      # default 10m
//			refresh_ahead <duration>      # default 72h
//			flags         flagd <path> | flagd_rpc <host:port> [tls <ca.pem>] | static <percent>
//			provider <twitter|linkedin|facebook|instagram|generic> {
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
		case "state_ttl", "refresh_ahead":
			opt := d.Val()
			var raw string
			if !d.AllArgs(&raw) {
				return nil, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(raw)
			if err != nil || dur <= 0 {
				return nil, d.Errf("credgate: %s must be a positive duration such as 10m, got %q", opt, raw)
			}
			if opt == "state_ttl" {
				app.StateTTL = caddy.Duration(dur)
			} else {
				app.RefreshAhead = caddy.Duration(dur)
			}
		case "provider":
			var name string
			if !d.AllArgs(&name) {
				return nil, d.Err("credgate: provider takes a platform name: twitter, linkedin, facebook, instagram or generic")
			}
			if _, err := oauth.Lookup(name, oauth.GenericSettings{}); err != nil {
				return nil, d.Errf("credgate: %v", err)
			}
			if _, dup := app.Providers[name]; dup {
				return nil, d.Errf("credgate: provider %s is configured twice", name)
			}
			pc, err := parseProvider(d)
			if err != nil {
				return nil, err
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
			var raw string
			if !d.AllArgs(&raw) {
				return nil, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(raw)
			if err != nil || dur <= 0 {
				return nil, d.Errf("credgate: timeout must be a positive duration, got %q", raw)
			}
			pc.Timeout = caddy.Duration(dur)
		default:
			return nil, d.Errf("credgate: unrecognized provider option %q", opt)
		}
	}
	return pc, nil
}
