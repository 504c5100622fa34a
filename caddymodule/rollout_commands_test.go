package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/internal/clitest"
	"github.com/credgate/credgate/internal/pgtest"
)

// cliChildEnv, when set (to the JSON list of arguments), makes the test
// binary run `caddy credgate <args>` as its whole process instead of the
// tests: see runCLIProcess.
const cliChildEnv = "CREDGATE_TEST_CLI_ARGS"

func TestMain(m *testing.M) {
	if raw := os.Getenv(cliChildEnv); raw != "" {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad", cliChildEnv, err)
			os.Exit(2)
		}
		root := &cobra.Command{Use: "credgate", SilenceUsage: true, SilenceErrors: true}
		root.AddCommand(credgateCommands()...)
		root.SetArgs(args)
		if root.Execute() != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runCLIProcess runs `caddy credgate <args>` in a process of its own
// (this test binary, see TestMain) and returns what reached its standard
// output and standard error: everything written there, by credgate or by
// any library, whatever it writes to.
func runCLIProcess(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	raw, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), cliChildEnv+"="+string(raw)), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// copyExample puts flags/flags.example.json in a directory of its own.
func copyExample(t *testing.T) string { return clitest.FlagFile(t) }

// oneErrorLine checks that a command failed with one `Error: …` line
// saying want, and nothing else.
func oneErrorLine(t *testing.T, what, out string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: accepted:\n%s", what, out)
		return
	}
	if !strings.HasPrefix(out, "Error: ") || strings.Count(out, "\n") != 1 || !strings.Contains(out, want) {
		t.Errorf("%s: want one `Error: …` line saying %q, got:\n%s", what, want, out)
	}
}

// statusLines are the only lines `rollout status` prints.
var statusLines = regexp.MustCompile(`^(facebook|instagram|linkedin|twitter|` +
	`  flags:  .+|  guard:  .+|  last 10m0s: new flow .+, legacy flow .+|  decisions: .+|  back end: .+|  ⚠ .+)$`)

// `rollout status` prints the percentage in force (exactly: 25.0 % from
// a rule at 25), the kill switch, the guard's halt and both arms'
// windowed success per platform; `rollout resume` clears a halt, audited,
// and refuses a platform that is not halted.
func TestRolloutStatusAndResumeCommands(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	ctx := context.Background()
	o := flags.NewOutcomes()
	for i := range 60 {
		o.Record(flags.ArmNew, "linkedin", i%5 != 0) // 80 %
		o.Record(flags.ArmLegacy, "linkedin", true)
		o.Record(flags.ArmNew, "twitter", true)
	}
	g := guard.New(pgtest.Pool(t, url), guard.DefaultConfig(), o, []string{"linkedin", "twitter"})
	if err := g.Tick(ctx); err != nil || !g.Halted("linkedin") {
		t.Fatalf("setting up a halt: %v", err)
	}
	path := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(path, []byte(rolloutFile(true, 25)), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, "rollout", "status", "--database-url", url, "--flags", "flagd "+path)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{
		"linkedin\n  flags:  25.0 % new, kill switch on\n",
		"guard:  HALTED since", "below min_success 0.950", "caddy credgate rollout resume --platform linkedin",
		"last 10m0s: new flow 80.0 % of 60, legacy flow 100.0 % of 60",
		"twitter\n  flags:  25.0 % new, kill switch on\n  guard:  not known (pass --config)\n", "new flow 100.0 % of 60, legacy flow no flows",
		"facebook\n  flags:  25.0 % new", "instagram\n  flags:  25.0 % new",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !statusLines.MatchString(line) {
			t.Errorf("status printed a line that is not the status: %q", line)
		}
	}
	out, err = runCLI(t, "rollout", "status", "--database-url", url, "--json", "--flags", "flagd "+path)
	var st struct {
		Platforms []guard.RolloutStatus `json:"platforms"`
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st.Platforms) != 4 || st.Platforms[2].Platform != "linkedin" || !st.Platforms[2].Halted ||
		st.Platforms[2].Flags == nil || st.Platforms[2].Flags.NewPercent != 25 || st.Platforms[2].Flags.Measured != flags.MeasuredRule {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if out, _ := runCLI(t, "rollout", "status", "--database-url", url); !strings.Contains(out, "flags:  not read (pass --config or --flags)") {
		t.Errorf("status without --flags:\n%s", out)
	}
	// Only a regular file of at most 1 MiB is read (issue 26, item 4).
	huge := filepath.Join(t.TempDir(), "huge.json")
	if err := os.WriteFile(huge, []byte(rolloutFile(true, 25)+strings.Repeat(" ", flags.MaxFileSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		args []string
		says string
	}{
		{[]string{"--flags", "flagd " + huge}, "too large for a flag file"},
		{[]string{"--flags", "flagd /dev/zero"}, "is a device, not a regular file"},
		{[]string{"--flags", "nosuch x"}, `unknown flag source "nosuch"`},
		{[]string{"--flags", "static 150"}, "from 0 to 100"},
		{[]string{"--window", "-1m"}, "--window must be at least 10s"},
		{[]string{"--window", "5s"}, "--window must be at least 10s"},
		{[]string{"--flags", "flagd /no/such/flags.json"}, "no such file"},
		{[]string{"--flags", "flagd " + filepath.Dir(path)}, "is a directory"},
		{[]string{"--config", "/no/such/Caddyfile"}, "no such file"},
	} {
		out, err := runCLI(t, append([]string{"rollout", "status", "--database-url", url}, bad.args...)...)
		oneErrorLine(t, fmt.Sprint("status ", bad.args), out, err, bad.says)
	}

	if _, err := runCLI(t, "rollout", "resume", "--database-url", url); err == nil {
		t.Error("resume without --platform accepted")
	}
	if _, err := runCLI(t, "rollout", "resume", "--database-url", url, "--platform", "twitter"); err == nil || !strings.Contains(err.Error(), "not halted") {
		t.Errorf("resuming a running platform: %v", err)
	}
	out, err = runCLI(t, "rollout", "resume", "--database-url", url, "--platform", "linkedin", "--by", "alice")
	if err != nil || !strings.Contains(out, "✓ linkedin resumed (halted since") {
		t.Fatalf("resume: %v %s", err, out)
	}
	var by string
	if err := pgtest.Pool(t, url).QueryRow(ctx, `SELECT details->>'by' FROM credential_audit_log WHERE action = 'rollout_resumed'`).Scan(&by); err != nil || by != "command alice" {
		t.Fatalf("resume audit: %q %v", by, err)
	}
	// A fresh window: the old outcomes are gone from the status.
	time.Sleep(10 * time.Millisecond)
	out, _ = runCLI(t, "rollout", "status", "--database-url", url)
	if !strings.Contains(out, "linkedin\n  flags:  not read (pass --config or --flags)\n  guard:  not known (pass --config)\n  last 10m0s: new flow no flows") {
		t.Errorf("status after the resume:\n%s", out)
	}
}

// `rollout resume` names a platform credgate does not know instead of
// saying it is not halted; --config adds the Caddyfile's own providers;
// a halt left in the database is cleared whatever its platform's name
// (issue 26, item 11).
func TestRolloutResumeNamesAnUnknownPlatform(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	config := filepath.Join(t.TempDir(), "Caddyfile")
	caddyfile := `{
	credgate {
		database_url {env.CREDGATE_TEST_NO_SUCH_VARIABLE}
		master_key {env.ENCRYPTION_MASTER_KEY}
		provider corp-sso {
			kind generic
			client_id c
			client_secret s
			auth_url https://sso.example/authorize
			token_url https://sso.example/token
		}
	}
}
`
	if err := os.WriteFile(config, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--platform", "myspace"}, `unknown platform "myspace", and no halt under that name (known: facebook, instagram, linkedin, twitter; --config names the Caddyfile's providers)`},
		{[]string{"--platform", "twitter"}, "twitter: not halted"},
		{[]string{"--platform", "corp-sso"}, `unknown platform "corp-sso"`},
		{[]string{"--platform", "corp-sso", "--config", config}, "corp-sso: not halted"},
	} {
		out, err := runCLI(t, append([]string{"rollout", "resume", "--database-url", url}, c.args...)...)
		oneErrorLine(t, fmt.Sprint("resume ", c.args), out, err, c.says)
	}
	var rows int
	if err := pgtest.Pool(t, url).QueryRow(context.Background(), `SELECT count(*) FROM credential_audit_log WHERE action = 'rollout_resumed'`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d rollout_resumed rows, want none (%v)", rows, err)
	}
	pgtest.Exec(t, url, `INSERT INTO rollout_halts (platform, halted_at, reason, new_success, new_samples, legacy_success, legacy_samples)
		VALUES ('retired-sso', now(), 'below min_success', 0.5, 60, 1, 60)`)
	if out, err := runCLI(t, "rollout", "resume", "--database-url", url, "--platform", "retired-sso"); err != nil || !strings.Contains(out, "✓ retired-sso resumed") {
		t.Fatalf("a halt left for a platform no longer configured: %v %s", err, out)
	}
}

// testCaddyfile is a Caddyfile whose credgate block reads flagFile, with
// guardBlock ("" for none), for two providers.
func testCaddyfile(t *testing.T, flagFile, guardBlock string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	src := fmt.Sprintf(`{
	credgate {
		database_url {env.CREDGATE_TEST_NO_SUCH_VARIABLE}
		master_key {env.ENCRYPTION_MASTER_KEY}
		flags flagd %s
		%s
		provider twitter {
			client_id t
			client_secret s
		}
		provider linkedin {
			client_id l
			client_secret s
		}
	}
}
`, flagFile, guardBlock)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// With --config, the guard is shown as the Caddyfile configures it (off,
// or its settings, and a halt the database holds), the flag file and the
// platforms are the Caddyfile's, and the window is the guard's; --flags
// still overrides the flag source. Without it, the guard is "not known".
func TestRolloutStatusShowsTheGuardAsConfigured(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	flagFile := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(flagFile, []byte(rolloutFile(true, 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	off := testCaddyfile(t, flagFile, "")
	out, err := runCLI(t, "rollout", "status", "--database-url", url, "--config", off)
	if err != nil {
		t.Fatalf("status --config: %v\n%s", err, out)
	}
	if want := "linkedin\n  flags:  40.0 % new, kill switch on\n  guard:  off (not configured)\n  last 10m0s: new flow no flows, legacy flow no flows\n" +
		"  decisions: none at the app's connect route\n" +
		"  back end: 0 token API and 0 egress reads in the last 1h0m0s; transition mode off: users moved now would get tokens the back end does not see (RUNBOOK, Phase 3½)\n" +
		"twitter\n  flags:  40.0 % new, kill switch on\n  guard:  off (not configured)\n"; !strings.HasPrefix(out, want) {
		t.Fatalf("status with the guard off:\n%s\nwant it to start:\n%s", out, want)
	}
	if out, _ := runCLI(t, "rollout", "status", "--database-url", url, "--config", off, "--json"); !strings.Contains(out, `"guard": {
    "enabled": false
  }`) {
		t.Errorf("status --json with the guard off:\n%s", out)
	}
	if out, _ := runCLI(t, "rollout", "status", "--database-url", url, "--flags", "flagd "+flagFile); strings.Count(out, "guard:  not known (pass --config)\n") != 4 {
		t.Errorf("status without --config:\n%s", out)
	}

	on := testCaddyfile(t, flagFile, "guard {\n\t\t\tmin_success 0.9\n\t\t\twindow 5m\n\t\t}")
	override := filepath.Join(t.TempDir(), "other.json")
	if err := os.WriteFile(override, []byte(rolloutFile(false, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "rollout", "status", "--database-url", url, "--config", on, "--flags", "flagd "+override)
	if err != nil || !strings.Contains(out, "twitter\n  flags:  kill switch off (legacy for everyone); split 10.0 % new\n"+
		"  guard:  on (min_success 0.900, max_gap 0.050, min_samples 50, window 5m0s)\n  last 5m0s: ") {
		t.Fatalf("status with the guard on and --flags: %v\n%s", err, out)
	}

	// A halt latched while the guard was on is shown; with the guard off
	// it decides nothing, and the status says so.
	o := flags.NewOutcomes()
	for range 60 {
		o.Record(flags.ArmNew, "twitter", false)
	}
	if err := guard.New(pgtest.Pool(t, url), guard.DefaultConfig(), o, []string{"twitter"}).Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, _ = runCLI(t, "rollout", "status", "--database-url", url, "--config", on)
	if !regexp.MustCompile(`twitter\n  flags:  40.0 % new, kill switch on\n  guard:  HALTED since \S+: new flow success 0.000 over 60 flows .*; on \(min_success 0.900`).MatchString(out) {
		t.Errorf("status with a halt, the guard on:\n%s", out)
	}
	out, _ = runCLI(t, "rollout", "status", "--database-url", url, "--config", off)
	if !strings.Contains(out, "guard:  off (not configured); the database still holds a halt, applied only while the guard is on: HALTED since") {
		t.Errorf("status with a halt, the guard off:\n%s", out)
	}
	out, _ = runCLI(t, "rollout", "status", "--database-url", url)
	if !strings.Contains(out, "twitter\n  flags:  not read (pass --config or --flags)\n  guard:  HALTED since") {
		t.Errorf("status with a halt, without --config:\n%s", out)
	}
	noFlags := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(noFlags, []byte("{\n\tcredgate {\n\t\tdatabase_url x\n\t}\n}\n"), 0o644)
	if out, _ := runCLI(t, "rollout", "status", "--database-url", url, "--config", noFlags); !strings.Contains(out, "flags:  none configured: legacy for everyone") {
		t.Errorf("status with a Caddyfile without flags:\n%s", out)
	}
	noApp := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(noApp, []byte(":8080 {\n\trespond ok\n}\n"), 0o644)
	out, err = runCLI(t, "rollout", "status", "--database-url", url, "--config", noApp)
	oneErrorLine(t, "a Caddyfile without credgate", out, err, "has no credgate app")
}

// The window's flows are counted right after they are recorded, with or
// without the guard: an instance adds its outcomes to the shared window
// every second either way (with the guard off it never did, and the
// status said "no flows" after 120 of them).
func TestRolloutStatusCountsTheWindowsFlowsWithoutTheGuard(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	app := secondInstance(t, url, "null")
	if app.guard != nil {
		t.Fatal("the instance has a guard")
	}
	outcomes := app.Rollout().Outcomes()
	for i := range 120 {
		outcomes.Record(flags.ArmNew, "linkedin", i%10 != 0) // 90 of 100
		if i%6 == 0 {
			outcomes.Record(flags.ArmLegacy, "linkedin", true) // 20
		}
	}
	outcomes.Record(flags.ArmNew, "linkedin", true) // 109 of 121 …
	want := "linkedin\n  flags:  not read (pass --config or --flags)\n  guard:  not known (pass --config)\n  last 10m0s: new flow 90.1 % of 121, legacy flow 100.0 % of 20\n"
	var out string
	deadline := time.Now().Add(3 * guardInterval)
	for {
		out, _ = runCLI(t, "rollout", "status", "--database-url", url)
		if strings.Contains(out, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the window's flows are not counted %v after they were recorded:\n%s\nwant:\n%s", 3*guardInterval, out, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An instance that stops adds what it counted since.
	outcomes.Record(flags.ArmLegacy, "linkedin", false)
	app.Stop()
	out, _ = runCLI(t, "rollout", "status", "--database-url", url)
	if !strings.Contains(out, "legacy flow 95.2 % of 21") {
		t.Fatalf("the outcomes of a stopping instance:\n%s", out)
	}
}

// `rollout set` on the example moves every platform, LinkedIn (its own
// branch) included, and changes nothing else; `rollout status` then reads
// exactly that percentage.
func TestRolloutSetMovesEveryPlatform(t *testing.T) {
	t.Parallel()
	path := copyExample(t)
	example, _ := os.ReadFile(path)
	out, err := runCLI(t, "rollout", "set", "--force", "25", "--flags", "flagd "+path)
	if err != nil {
		t.Fatalf("set: %v\n%s", err, out)
	}
	want := path + ": oauth-new-flow\n" +
		"  facebook     0.0 % →  25.0 %\n" +
		"  instagram    0.0 % →  25.0 %\n" +
		"  linkedin     0.0 % →  25.0 %\n" +
		"  twitter      0.0 % →  25.0 %\n" +
		"✓ written; a running credgate applies it within 250 ms\n"
	if out != want {
		t.Fatalf("set printed:\n%s\nwant:\n%s", out, want)
	}
	after, _ := os.ReadFile(path)
	if string(after) != strings.ReplaceAll(string(example), `[ "new", 0 ], [ "legacy", 100 ]`, `[ "new", 25 ], [ "legacy", 75 ]`) {
		t.Fatalf("the file has more changes than the percentages:\n%s", after)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", info.Mode().Perm())
	}
	url := pgtest.Database(t)
	out, _ = runCLI(t, "rollout", "status", "--database-url", url, "--flags", "flagd "+path)
	if strings.Count(out, "flags:  25.0 % new, kill switch on\n") != 4 {
		t.Fatalf("status after set 25:\n%s", out)
	}

	// The same again changes nothing and writes nothing.
	before, _ := os.Stat(path)
	out, err = runCLI(t, "rollout", "set", "--force", "25%", "--flags", "flagd "+path)
	if now, _ := os.Stat(path); err != nil || !strings.Contains(out, "already sends 25 % of facebook, instagram, linkedin, twitter to the new flow; nothing written") || !os.SameFile(before, now) {
		t.Fatalf("set to the same: %v\n%s", err, out)
	}
	// A flag with no targeting gets a split; the kill switch stays off.
	os.WriteFile(path, []byte(`{"flags": {"oauth-new-flow-enabled": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"},
		"oauth-new-flow": {"state": "ENABLED", "variants": {"new": "new", "legacy": "legacy"}, "defaultVariant": "legacy"}}}`), 0o644)
	out, err = runCLI(t, "rollout", "set", "--force", "12.5", "--flags", "flagd "+path)
	if err != nil || !strings.Contains(out, "  twitter      0.0 % →  12.5 %\n") ||
		!strings.Contains(out, "⚠ the kill switch (oauth-new-flow-enabled) is off: everyone stays on the legacy flow until it is on (set does not change it)\n") {
		t.Fatalf("set on a flag without targeting: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), `"targeting": { "fractional": [ [ "new", 125 ], [ "legacy", 875 ] ] }`) ||
		!strings.Contains(string(data), `"defaultVariant": "off"`) {
		t.Fatalf("the file:\n%s", data)
	}
}

// --platform moves one platform: a branch of its own in front when it
// shares the else branch (the others keep theirs), changed in place when
// it has one; the platforms are --config's providers.
func TestRolloutSetOnePlatformAddsABranch(t *testing.T) {
	t.Parallel()
	path := copyExample(t)
	out, err := runCLI(t, "rollout", "set", "--force", "10", "--platform", "twitter", "--flags", "flagd "+path)
	if err != nil || !strings.Contains(out, "  facebook     0.0 % →   0.0 %  (unchanged)\n") || !strings.Contains(out, "  twitter      0.0 % →  10.0 %\n") {
		t.Fatalf("set --platform twitter: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"if": [
          { "==": [ { "var": "platform" }, "twitter" ] },
          { "fractional": [ [ "new", 10 ], [ "legacy", 90 ] ] },
          { "==": [ { "var": "platform" }, "linkedin" ] },
          { "fractional": [ [ "new", 0 ], [ "legacy", 100 ] ] },
          { "fractional": [ [ "new", 0 ], [ "legacy", 100 ] ] }
        ]`) {
		t.Fatalf("the file:\n%s", data)
	}
	config := testCaddyfile(t, path, "")
	out, err = runCLI(t, "rollout", "set", "--force", "5", "--platform", "linkedin", "--config", config)
	if err != nil || out != path+": oauth-new-flow\n  linkedin    0.0 % →   5.0 %\n  twitter    10.0 % →  10.0 %  (unchanged)\n✓ written; a running credgate applies it within 250 ms\n" {
		t.Fatalf("set --platform linkedin --config: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(path); strings.Count(string(data), `"=="`) != 2 {
		t.Fatalf("linkedin's branch was not changed in place:\n%s", data)
	}
	url := pgtest.Database(t)
	out, _ = runCLI(t, "rollout", "status", "--database-url", url, "--config", config)
	if !strings.Contains(out, "linkedin\n  flags:  5.0 % new") || !strings.Contains(out, "twitter\n  flags:  10.0 % new") || strings.Contains(out, "facebook") {
		t.Fatalf("status after the two sets:\n%s", out)
	}
}

// The file is replaced by a rename: the flag file reader of a running
// credgate (flagd in-process, polling every 250 ms) and a reader polling
// as fast as it can never see a part of a file or none, through 40 sets;
// the rollout in force follows. On every refusal the file is left as it
// was (same content, same inode), with nothing beside it.
func TestRolloutSetReplacesTheFileAtomically(t *testing.T) {
	t.Parallel()
	path := copyExample(t)
	var problems atomic.Int64
	provider, err := flags.FlagdFile(path, func(e flags.SourceEvent) {
		if e.Problem != "" {
			problems.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r := flags.NewRollout(provider)
	if err := r.StartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })

	var reads, torn atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(path)
			reads.Add(1)
			if err != nil || flags.CheckFlagSet(data) != nil {
				torn.Add(1)
			}
		}
	})
	for i := range 40 {
		before, _ := os.Stat(path)
		percent := []string{"100", "0"}[i%2]
		if out, err := runCLI(t, "rollout", "set", "--force", percent, "--flags", "flagd "+path); err != nil {
			t.Fatalf("set %s: %v\n%s", percent, err, out)
		}
		if after, _ := os.Stat(path); os.SameFile(before, after) {
			t.Fatal("the file was written in place, not renamed over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if torn.Load() != 0 || reads.Load() < 40 {
		t.Fatalf("%d of %d reads saw a missing or partial flag file", torn.Load(), reads.Load())
	}
	if n := problems.Load(); n != 0 {
		t.Fatalf("credgate's flag file reader saw %d problems", n)
	}
	if _, err := runCLI(t, "rollout", "set", "--force", "100", "--flags", "flagd "+path); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Second, func() bool {
		return r.Decide(context.Background(), userN(1), "linkedin").Arm == flags.ArmNew
	})

	original, _ := os.ReadFile(path)
	before, _ := os.Stat(path)
	for _, bad := range []struct {
		args []string
		says string
	}{
		{[]string{"101"}, "from 0 to 100"},
		{[]string{"2.125"}, "more than two decimals"},
		{[]string{"50", "--platform", "linkdin"}, `unknown platform "linkdin"`},
	} {
		out, err := runCLI(t, append([]string{"rollout", "set", "--force", "--flags", "flagd " + path}, bad.args...)...)
		oneErrorLine(t, fmt.Sprint("set ", bad.args), out, err, bad.says)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, original) {
		t.Fatal("a refused set changed the file")
	}
	if now, _ := os.Stat(path); !os.SameFile(before, now) {
		t.Fatal("a refused set replaced the file")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("left beside the flag file: %v", entries)
	}
}

// `rollout set` refuses, with one `Error: …` line that names what it
// found and without touching the file: a path that is not a regular
// file, JSON that is not valid, a rule it cannot change safely, a source
// that is not a file. A symbolic link's target is changed, the link kept.
func TestRolloutSetRefusesWhatItCannotChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	invalid := write("invalid.json", "{\"flags\": {\n  \"oauth-new-flow\": {,\n}}")
	reversed := write("reversed.json", strings.Replace(rolloutFile(true, 25), `[["new",25],["legacy",75]]`, `[["legacy",75],["new",25]]`, 1))
	rejected := write("rejected.json", `{"flags": {"oauth-new-flow": {"state": "ENABLED", "variants": {"new": "new", "legacy": "legacy"}, "defaultVariant": "nope"}}}`)
	config := testCaddyfile(t, "/does/not/matter.json", "")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"50", "--flags", "flagd " + dir}, "is a directory, not a regular file"},
		{[]string{"50", "--flags", "flagd /dev/null"}, "is a device, not a regular file"},
		{[]string{"50", "--flags", "flagd " + filepath.Join(dir, "missing.json")}, "no such file"},
		{[]string{"50", "--flags", "flagd " + invalid}, "invalid.json: not valid JSON: invalid character ',' looking for beginning of object key string (line 2)"},
		{[]string{"50", "--flags", "flagd " + reversed}, `the targeting is the split { "fractional": [ [ "legacy", 75 ], [ "new", 25 ] ] }: credgate writes only [["new", p], ["legacy", 100 - p]]`},
		{[]string{"50", "--flags", "flagd " + rejected}, "not a flag set flagd accepts"},
		{[]string{"50", "--flags", "static 20"}, "the flag source is static, not a flag file"},
		{[]string{"50", "--flags", "flagd_rpc flagd.internal:8013"}, "the flag source is flagd_rpc, not a flag file"},
		{[]string{"50"}, "name the flag file"},
		{[]string{"--flags", "flagd " + reversed}, "name the percentage"},
		{[]string{"abc", "--flags", "flagd " + reversed}, `got "abc"`},
		{[]string{"-5", "--flags", "flagd " + reversed}, `got "-5"`},
		{[]string{"50", "--config", config}, "flag file: lstat /does"},
	} {
		var before []os.FileInfo
		for _, p := range []string{invalid, reversed, rejected} {
			info, _ := os.Stat(p)
			before = append(before, info)
		}
		out, err := runCLI(t, append([]string{"rollout", "set", "--force"}, tc.args...)...)
		oneErrorLine(t, fmt.Sprint("set ", tc.args), out, err, tc.says)
		for i, p := range []string{invalid, reversed, rejected} {
			if info, _ := os.Stat(p); !os.SameFile(before[i], info) || info.ModTime() != before[i].ModTime() {
				t.Errorf("set %v touched %s", tc.args, p)
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Fatalf("left in the directory: %v", entries)
	}

	// A symbolic link: its target changes, the link stays a link.
	target := copyExample(t)
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "rollout", "set", "--force", "30", "--flags", "flagd "+link)
	if info, _ := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 || !strings.HasPrefix(out, target+": oauth-new-flow\n") {
		t.Fatalf("set through a link: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(target); !strings.Contains(string(data), `[ "new", 30 ], [ "legacy", 70 ]`) {
		t.Fatalf("the link's target:\n%s", data)
	}
}

// The commands' output, in a process of their own, is what they print
// and nothing else: no line from flagd (whose in-process provider wrote
// JSON lines to stderr by itself) or from any other library.
func TestRolloutCommandsPrintNothingElse(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	path := copyExample(t)
	stdout, stderr, err := runCLIProcess(t, nil, "rollout", "set", "--force", "25", "--flags", "flagd "+path)
	if err != nil || stderr != "" || !regexp.MustCompile(`^\S+: oauth-new-flow\n(  \w+ +[0-9. ]+% → +[0-9. ]+%\n){4}✓ written; a running credgate applies it within 250 ms\n$`).MatchString(stdout) {
		t.Fatalf("set: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	config := testCaddyfile(t, path, "guard")
	for _, args := range [][]string{
		{"rollout", "status", "--database-url", url, "--flags", "flagd " + path},
		{"rollout", "status", "--database-url", url, "--config", config},
		{"rollout", "status", "--database-url", url, "--flags", "static 25"},
	} {
		stdout, stderr, err := runCLIProcess(t, nil, args...)
		if err != nil || stderr != "" || !strings.Contains(stdout, "flags:  25.0 % new, kill switch on") {
			t.Errorf("%v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout, stderr)
			continue
		}
		for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
			if !statusLines.MatchString(line) {
				t.Errorf("%v printed a line that is not the status: %q", args, line)
			}
		}
	}
	stdout, stderr, err = runCLIProcess(t, nil, "rollout", "set", "--force", "200", "--flags", "flagd "+path)
	if err == nil || stdout != "" || stderr != "Error: the percentage must be a number from 0 to 100, got \"200\"\n" {
		t.Errorf("a refused set: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
}
