package caddymodule

import "github.com/credgate/credgate/secret"

// warnLiteral warns, naming where and the option (never the value), when
// a secret is written out in the config.
func (a *App) warnLiteral(where, option, raw string) {
	if secret.Literal(raw) {
		a.logger.Warn(where + " " + option + " is written literally in the config, and Caddy's debug log prints the config " +
			"(\"adjusted config\") with it: read it at run time instead, for example {env.NAME} (not {$NAME}, which the Caddyfile adapter writes into the config)")
	}
}
