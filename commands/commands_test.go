package commands

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/credgate/credgate/internal/clitest"
	"github.com/credgate/credgate/vault"
)

// The commands are tested here where they need no gateway (keys, the
// schema, rotation and backfill, and the commands' own parts). Those that
// share a seeded database, a second instance or the gateway harness with
// the handlers' tests (rollout, audit, the app's table, verify and
// report) are tested in caddymodule (the *_commands_test.go files there).

// runCLI executes `caddy credgate <args>` in-process and returns what it
// printed.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return clitest.Run(t, Commands(), args...)
}

// rolloutSetPreflight is asked before a percentage above 0 is written,
// with the platforms it reaches; its error refuses the change. Not
// parallel: it sets the package's hook.
func TestRolloutSetAsksThePreflightHook(t *testing.T) {
	path := clitest.FlagFile(t)
	var asked [][]string
	previous := rolloutSetPreflight
	rolloutSetPreflight = func(_ context.Context, _ *cobra.Command, platforms []string, percent float64) error {
		asked = append(asked, append([]string{fmt.Sprint(percent)}, platforms...))
		if percent > 20 {
			return errors.New("the app's back end does not read its tokens through credgate yet")
		}
		return nil
	}
	t.Cleanup(func() { rolloutSetPreflight = previous })
	original, _ := os.ReadFile(path)
	out, err := runCLI(t, "rollout", "set", "50", "--flags", "flagd "+path)
	if err == nil || !strings.Contains(out, "does not read its tokens through credgate yet") {
		t.Fatalf("set 50 with the hook refusing: %v\n%s", err, out)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, original) {
		t.Fatal("a refused set changed the file")
	}
	if _, err := runCLI(t, "rollout", "set", "10", "--platform", "linkedin", "--flags", "flagd "+path); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "rollout", "set", "0", "--flags", "flagd "+path); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(asked); got != "[[50 facebook instagram linkedin twitter] [10 linkedin]]" {
		t.Fatalf("the hook was asked %s", got)
	}
}

func TestWithProgressPrintsWhileRunning(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	p, err := withProgress(&out, "rewrap", 20*time.Millisecond, func(report func(vault.Progress)) (vault.Progress, error) {
		for i := range 5 {
			report(vault.Progress{Done: int64(i * 10), Remaining: int64(50 - i*10), Batches: i})
			time.Sleep(30 * time.Millisecond)
		}
		return vault.Progress{Done: 50}, nil
	})
	if err != nil || p.Done != 50 {
		t.Fatal(p, err)
	}
	lines := strings.Count(out.String(), "rewrap: ")
	if lines < 3 || !strings.Contains(out.String(), "remaining") {
		t.Errorf("%d progress lines in 150ms at a 20ms interval:\n%s", lines, out.String())
	}
}
