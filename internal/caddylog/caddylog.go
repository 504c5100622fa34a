// Package caddylog keeps the log of a Caddy that a test starts out of the
// test's output: it goes to caddy.log in the test's temp dir, and its last
// lines are printed (t.Log) only when the test failed.
//
// Left alone, Caddy's default log writes to stderr, and `go test` shows a
// failing package's whole output: every test's Caddy, passing or not,
// pages of JSON around the one line that says what broke. With the log
// in a file, a failure reads as the assertion and then the log of the
// Caddy it happened in.
//
// Caddy's default logger belongs to the process, not to a config: a
// loaded config sets it, and stopping Caddy does not put it back. So when
// the test ends, Load stops Caddy and points the default logger away from
// the test's file (whose temp dir is about to go) to a discard writer;
// the next config loaded sets it again.
package caddylog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/logging" // the file writer
)

// Lines is how many of a log's last lines a failed test prints.
const Lines = 200

// files holds, for each test running a Caddy, the log files to print if
// it fails: the one Load made, and any the test's config named itself.
// Keyed by the test, because a test can load many configs (reloads) into
// one log.
var files sync.Map // testing.TB → *testFiles

type testFiles struct {
	mu    sync.Mutex
	paths []string
}

// quiet is the config Load leaves behind: nothing running, and the
// default logger writing nowhere.
const quiet = `{"admin":{"disabled":true,"config":{"persist":false}},` +
	`"logging":{"logs":{"default":{"writer":{"output":"discard"}}}}}`

// Load is caddy.Load(cfg, true) for a test, with cfg's default log sent to
// caddy.log in the test's temp dir. A config whose default log already
// names a writer (a test that reads its own log) keeps it; the files its
// logs name are printed on failure too.
//
// When the test ends, Caddy is stopped (a test's own caddy.Stop may come
// before or after: it is idempotent) and the log's last Lines lines are
// printed if the test failed.
//
// Caddy runs one config per process, so a test that loads one while
// another test's Caddy runs (two tests that called t.Parallel) would
// replace that test's servers under it: Load fails the test at once
// instead, naming the other.
func Load(t testing.TB, cfg []byte) error {
	t.Helper()
	own(t)
	cfg, err := withLog(t, cfg)
	if err != nil {
		return err
	}
	return load(cfg)
}

// load is caddy.Load(cfg, true) that logs nothing through the default
// logger it replaces: Caddy says "redirected default logger" there (to
// stderr before the first test, or into the last test's file). Buffered
// as `caddy run` does, the line goes to the new log instead.
func load(cfg []byte) error {
	_, previous, _ := caddy.BufferedLog()
	defer caddy.UnbufferDefaultLogger(previous)
	return caddy.Load(cfg, true)
}

// withLog returns cfg with its default log, unless it names one, and Go's
// standard log (Caddy's "sink") written to the test's file.
func withLog(t testing.TB, cfg []byte) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &top); err != nil {
		return nil, fmt.Errorf("caddylog: reading the config: %w", err)
	}
	logging := map[string]any{}
	if raw, ok := top["logging"]; ok {
		if err := json.Unmarshal(raw, &logging); err != nil {
			return nil, fmt.Errorf("caddylog: reading the config's logging: %w", err)
		}
	}
	logs, _ := logging["logs"].(map[string]any)
	if logs == nil {
		logs = map[string]any{}
	}
	for _, l := range logs {
		l, _ := l.(map[string]any)
		writer, _ := l["writer"].(map[string]any)
		if name, _ := writer["filename"].(string); writer["output"] == "file" && name != "" {
			watch(t, name)
		}
	}
	def, _ := logs["default"].(map[string]any)
	if def == nil {
		def = map[string]any{} // the Caddyfile adapter may have made one with only "exclude"
	}
	ours := map[string]any{"output": "file", "filename": File(t)}
	if _, ok := def["writer"]; !ok {
		def["writer"] = ours
		logs["default"] = def
		logging["logs"] = logs
	}
	// The sink is Go's standard logger, which libraries write to (an
	// OTLP exporter's errors): Caddy sends it to stderr unless told.
	if _, ok := logging["sink"]; !ok {
		logging["sink"] = map[string]any{"writer": ours}
	}
	raw, err := json.Marshal(logging)
	if err != nil {
		return nil, err
	}
	top["logging"] = raw
	return json.Marshal(top)
}

// File is the file the Caddy of t logs to, unless its config names its
// own default log: for a test that reads what Caddy logged.
func File(t testing.TB) string {
	return watch(t, "")
}

// watch records name as one of t's log files (name "" is the one in t's
// temp dir) and returns it. The first call for t makes that file's name
// and registers the end of the test's Caddy.
func watch(t testing.TB, name string) string {
	v, ok := files.Load(t)
	if !ok {
		fresh := &testFiles{paths: []string{filepath.Join(t.TempDir(), "caddy.log")}}
		if v, ok = files.LoadOrStore(t, fresh); !ok {
			t.Cleanup(func() { end(t, fresh) })
		}
	}
	tf := v.(*testFiles)
	tf.mu.Lock()
	defer tf.mu.Unlock()
	if name == "" {
		return tf.paths[0]
	}
	if !slices.Contains(tf.paths, name) {
		tf.paths = append(tf.paths, name)
	}
	return name
}

// end runs when the test ends, before its temp dir is removed: the log is
// complete once Caddy has stopped.
func end(t testing.TB, tf *testFiles) {
	files.Delete(t)
	caddy.Stop()
	if err := load([]byte(quiet)); err != nil {
		t.Errorf("caddylog: pointing Caddy's log away from the test's file: %v", err)
	}
	caddy.Stop()
	if !t.Failed() {
		return
	}
	tf.mu.Lock()
	defer tf.mu.Unlock()
	for _, p := range tf.paths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue // the test's config sent its logs elsewhere
		}
		PrintTail(t, p)
	}
}

// ShowOnFailure prints the last Lines lines of path when t fails: for a
// Caddy run as a process whose output the test sends to path.
func ShowOnFailure(t testing.TB, path string) {
	t.Cleanup(func() {
		if t.Failed() {
			PrintTail(t, path)
		}
	})
}

// PrintTail logs the last Lines lines of the log at path.
func PrintTail(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("Caddy's log: %v", err)
		return
	}
	last, total := tail(b, Lines)
	switch {
	case total == 0:
		t.Logf("Caddy's log %s is empty", path)
	case total <= Lines:
		t.Logf("Caddy's log %s:\n%s", path, last)
	default:
		t.Logf("Caddy's log %s, its last %d of %d lines:\n%s", path, Lines, total, last)
	}
}

// Tail returns the last Lines lines of the log at path, for a failure
// message (a Caddy that did not start).
func Tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	last, _ := tail(b, Lines)
	return last
}

// tail returns the last n lines of b and how many lines b has.
func tail(b []byte, n int) (string, int) {
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return "", 0
	}
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		return string(bytes.Join(lines[len(lines)-n:], []byte("\n"))), len(lines)
	}
	return string(b), len(lines)
}

// owner is the test whose Caddy runs now (the one whose config Load
// loaded last and which has not ended); "" when none does. One of two
// parallel tests with a Caddy each once failed with "connection refused"
// when the other's config took its servers down.
var owner struct {
	sync.Mutex
	name string
}

// own makes t the owner of the process's Caddy, or fails t if another
// running test owns it. A subtest may load while its parent owns it.
func own(t testing.TB) {
	t.Helper()
	release, err := claim(t.Name())
	if err != nil {
		t.Fatal(err)
	}
	if release != nil {
		t.Cleanup(release)
	}
}

// claim makes the test named name the owner; release is nil when it (or
// its parent) owns it already.
func claim(name string) (release func(), err error) {
	owner.Lock()
	defer owner.Unlock()
	switch {
	case owner.name == "":
		owner.name = name
		return func() {
			owner.Lock()
			defer owner.Unlock()
			if owner.name == name {
				owner.name = ""
			}
		}, nil
	case owner.name == name || strings.HasPrefix(name, owner.name+"/"):
		return nil, nil
	}
	return nil, fmt.Errorf("the Caddy of %s is running: a test that starts Caddy in-process must not call t.Parallel (one config per process)", owner.name)
}
