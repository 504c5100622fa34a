// Package credgate is the import path xcaddy builds into Caddy: importing it
// registers every credgate module and command.
//
//	xcaddy build v2.11.9 --with github.com/credgate/credgate
//
// The product itself lives in the subpackages: connect, oauth, vault,
// flags, guard, worker and the rest are plain Go libraries, caddymodule
// wires them into Caddy and commands is `caddy credgate …`
// (docs/architecture.md).
package credgate

import (
	// Registers the credgate app, handlers and Caddyfile options.
	_ "github.com/credgate/credgate/caddymodule"
	// Registers the `caddy credgate …` commands.
	_ "github.com/credgate/credgate/commands"
)
