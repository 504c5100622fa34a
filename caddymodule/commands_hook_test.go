package caddymodule

import "github.com/spf13/cobra"

// credgateCommands is `caddy credgate`'s subcommand tree, which the
// tests here run in-process. The commands live in package commands,
// which imports this one, so the tests here cannot import it: the
// external test package sets it (commands_ext_test.go).
var credgateCommands func() []*cobra.Command

// UseCommands is how the external test package hands over the commands.
func UseCommands(commands func() []*cobra.Command) { credgateCommands = commands }
