// Command caddy is Caddy with credgate built in, for `go build` and
// `go run`: the same binary `make build` makes with xcaddy (the standard
// modules and credgate), without needing xcaddy. The tests that follow
// docs/RUNBOOK.md build it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// The standard modules, as xcaddy includes them.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// credgate's modules and commands.
	_ "github.com/credgate/credgate"
)

func main() { caddycmd.Main() }
