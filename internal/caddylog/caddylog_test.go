package caddylog_test

import (
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zapcore"

	"github.com/credgate/credgate/internal/caddylog"
)

// childEnv, when set, makes TestAChildThatLogs run: the test that
// TestOnlyAFailedTestPrintsItsLog runs in a process of its own, to see
// what `go test` prints for it.
const childEnv = "CADDYLOG_TEST_CHILD"

const noAdmin = `"admin":{"disabled":true,"config":{"persist":false}}`

// logged reads the log at path, "" if there is none.
func logged(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// Where a config's default log goes once Load has it, and where it goes
// after the test. Not parallel: Caddy's default logger is the process's.
func TestLoadSendsTheDefaultLogToTheTestsFile(t *testing.T) {
	own := filepath.Join(t.TempDir(), "own.log")
	for _, tc := range []struct {
		name, logging string
		// in is where the line must be ("" = File(t)); excluded, that it
		// must be in no file.
		in       string
		excluded bool
	}{
		{name: "no logging section"},
		{name: "a default log with only an exclude, as the Caddyfile adapter makes one",
			logging: `{"logs":{"default":{"exclude":["marker"]}}}`, excluded: true},
		{name: "a default log of the test's own",
			logging: `{"logs":{"default":{"writer":{"output":"file","filename":"` + own + `"}}}}`, in: own},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := `{` + noAdmin + `}`
			if tc.logging != "" {
				cfg = `{` + noAdmin + `,"logging":` + tc.logging + `}`
			}
			if err := caddylog.Load(t, []byte(cfg)); err != nil {
				t.Fatal(err)
			}
			caddy.Log().Named("marker").Info("the marker line")
			var found []string
			for _, f := range []string{caddylog.File(t), own} {
				if strings.Contains(logged(t, f), "the marker line") {
					found = append(found, f)
				}
			}
			want := []string{caddylog.File(t)}
			if tc.in != "" {
				want = []string{tc.in}
			}
			if tc.excluded {
				want = nil
			}
			if strings.Join(found, " ") != strings.Join(want, " ") {
				t.Errorf("the line is in %q, want %q", found, want)
			}
			// Go's standard log (libraries') goes to the test's file
			// whatever the config's default log is.
			log.Print("a library's line")
			if !strings.Contains(logged(t, caddylog.File(t)), "a library's line") {
				t.Errorf("the standard log's line is not in %s", caddylog.File(t))
			}
		})
	}
	// Each subtest's end stopped Caddy and pointed its default logger
	// away from the subtest's file, whose temp dir is gone.
	if caddy.ActiveContext().Context != nil {
		t.Error("Caddy still runs after the tests that loaded it")
	}
	if caddy.Log().Core().Enabled(zapcore.ErrorLevel) {
		t.Error("after the tests, Caddy's default logger still writes somewhere")
	}
}

// A passing test prints nothing of Caddy's log, and a failing one prints
// its last lines (each test here is a `go test -v` of its own).
func TestOnlyAFailedTestPrintsItsLog(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		printed bool
	}{{"pass", false}, {"fail", true}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAChildThatLogs$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+tc.mode)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != (tc.mode == "fail") {
			t.Fatalf("the %s child: %v\n%s", tc.mode, err, out)
		}
		// Over Lines lines were logged: only the last Lines are printed.
		printed := strings.Count(string(out), "line number ")
		switch {
		case !tc.printed && printed != 0:
			t.Errorf("a passing test printed %d lines of Caddy's log:\n%s", printed, out)
		case tc.printed && (printed != caddylog.Lines || !strings.Contains(string(out), "line number 249")):
			t.Errorf("a failing test printed %d lines of Caddy's log, want its last %d:\n%s", printed, caddylog.Lines, out)
		}
		if strings.Contains(string(out), "line number 49\"") {
			t.Errorf("a line before the last %d was printed", caddylog.Lines)
		}
	}
}

func TestAChildThatLogs(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("run by TestOnlyAFailedTestPrintsItsLog, in a process of its own")
	}
	if err := caddylog.Load(t, []byte(`{`+noAdmin+`}`)); err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		caddy.Log().Info("line number " + strconv.Itoa(i))
	}
	if mode == "fail" {
		t.Error("failing, as asked")
	}
}

// A second test's Caddy would replace the running one's servers: the
// claim is refused, naming the owner, while the owner and its subtests
// may load again, and it is free once the owner released it.
func TestOneTestOwnsCaddyAtATime(t *testing.T) {
	release, err := caddylog.Claim("TestA")
	if err != nil || release == nil {
		t.Fatalf("first claim: %v", err)
	}
	if r, err := caddylog.Claim("TestA"); err != nil || r != nil {
		t.Errorf("the owner again: %v", err)
	}
	if r, err := caddylog.Claim("TestA/sub"); err != nil || r != nil {
		t.Errorf("the owner's subtest: %v", err)
	}
	for _, other := range []string{"TestB", "TestAB"} {
		if _, err := caddylog.Claim(other); err == nil || !strings.Contains(err.Error(), "TestA is running") {
			t.Errorf("%s while TestA owns Caddy: %v", other, err)
		}
	}
	release()
	r, err := caddylog.Claim("TestB")
	if err != nil || r == nil {
		t.Fatalf("after the release: %v", err)
	}
	r()
}
