//go:build unix

package flags_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credgate/credgate/flags"
)

// Something other than a regular file at the flag path is a source
// error at once, never a wait or an endless read: everyone goes to the
// legacy flow, the problem names what is there, and the poll goes on, so
// a good file put back applies (issue 26, item 4: a named pipe blocked
// the poll for good, and a symbolic link to /dev/zero grew memory until
// the process died).
func TestOddFilesAtTheFlagPathAreSourceErrors(t *testing.T) {
	t.Parallel()
	huge := flagFile(true, 100) + strings.Repeat(" ", flags.MaxFileSize)
	for _, c := range []struct {
		name string
		put  func(t *testing.T, path string)
		says string
	}{
		{"named pipe", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "is a named pipe, not a regular file"},
		{"symbolic link to a device", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "is a device, not a regular file"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "is a directory, not a regular file"},
		{"file over 1 MiB", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(huge), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "too large for a flag file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "flags.json")
			writeAtomically(t, path, flagFile(true, 100))
			events := make(chan flags.SourceEvent, 64)
			p, err := flags.FlagdFile(path, func(e flags.SourceEvent) { events <- e })
			if err != nil {
				t.Fatal(err)
			}
			r := flags.NewRollout(p, flags.WithDecisionTimeout(10*time.Second))
			if err := r.StartAndWait(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(context.Background()) })
			isNew := func() bool { return r.Decide(context.Background(), "u1", "twitter").Arm == flags.ArmNew }
			waitFor(t, isNew)

			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			c.put(t, path)
			deadline := time.After(3 * time.Second)
			for seen := false; !seen; {
				select {
				case e := <-events:
					seen = e.State == flags.SourceError && strings.Contains(e.Problem, c.says)
				case <-deadline:
					t.Fatalf("no source error saying %q within 3 s", c.says)
				}
			}
			// The event comes as the poll hands flagd no flags; flagd
			// applies them a moment later.
			waitFor(t, func() bool { return r.Decide(context.Background(), "u1", "twitter").Reason == flags.ReasonFlagNotFound })

			// The poll goes on: a good file in its place applies.
			if err := os.RemoveAll(path); err != nil {
				t.Fatal(err)
			}
			writeAtomically(t, path, flagFile(true, 100))
			waitFor(t, isNew)
		})
	}
}
