// Package clitest runs `caddy credgate …` in-process for tests, the same
// way in every package that tests the commands (commands, and
// caddymodule, whose tests share a database and a gateway with them).
package clitest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
)

// Run executes `caddy credgate <args>` with the given subcommand tree and
// returns everything it printed, its errors included.
func Run(t testing.TB, commands []*cobra.Command, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "credgate", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(commands...)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// FlagFile copies the repository's example flag file
// (flags/flags.example.json, read from a package directory one level
// below the root) into the test's temp dir and returns its path, for a
// test to change.
func FlagFile(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile("../flags/flags.example.json")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}
