package caddymodule

import (
	"encoding/base64"
	"testing"

	"github.com/spf13/cobra"

	"github.com/credgate/credgate/internal/clitest"
)

// credgateCommands is `caddy credgate`'s subcommand tree, which the
// tests here run in-process. The commands live in package commands,
// which imports this one, so the tests here cannot import it: the
// external test package sets it (commands_ext_test.go).
var credgateCommands func() []*cobra.Command

// UseCommands is how the external test package hands over the commands.
func UseCommands(commands func() []*cobra.Command) { credgateCommands = commands }

// runCLI executes `caddy credgate <args>` in-process and returns what it
// printed.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return clitest.Run(t, credgateCommands(), args...)
}

// testKey is a master key of its own for each b.
func testKey(b byte) string {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b + byte(i)
	}
	return base64.StdEncoding.EncodeToString(k)
}
