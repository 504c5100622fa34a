package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
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
//			flags        flagd <path> | flagd_rpc <host:port> [tls <ca.pem>] | static <percent>
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
