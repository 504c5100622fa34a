package caddymodule_test

import (
	"github.com/credgate/credgate/caddymodule"
	"github.com/credgate/credgate/commands"
)

// The tests of this package run `caddy credgate …` in-process: they get
// the commands from here, where importing package commands makes no
// cycle.
func init() { caddymodule.UseCommands(commands.Commands) }
