// Package credgate is the import path xcaddy builds into Caddy: importing it
// registers every credgate module and command.
//
//	xcaddy build v2.11.9 --with github.com/credgate/credgate
//
// The product itself lives in the subpackages: oauth, vault, flags and
// migrations are plain Go libraries, and caddymodule wires them into Caddy.
package credgate

import (
	// Registers the credgate app, handlers, Caddyfile options and commands.
	_ "github.com/credgate/credgate/caddymodule"
)
