package caddymodule

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/internal/pgtest"
)

// `rollout status` prints the percentage in force, the kill switch, the
// guard state and both arms' windowed success per platform; `rollout
// resume` clears a halt, audited, and refuses a platform that is not
// halted.
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
		"linkedin\n  flags:  2", "kill switch on",
		"guard:  HALTED since", "below min_success 0.950", "caddy credgate rollout resume --platform linkedin",
		"last 10m0s: new flow 80.0 % of 60, legacy flow 100.0 % of 60",
		"twitter\n", "guard:  running", "new flow 100.0 % of 60, legacy flow no flows",
		"facebook\n", "instagram\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "rollout", "status", "--database-url", url, "--json")
	var st struct {
		Platforms []RolloutStatus `json:"platforms"`
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st.Platforms) != 4 || st.Platforms[2].Platform != "linkedin" || !st.Platforms[2].Halted {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if out, _ := runCLI(t, "rollout", "status", "--database-url", url); !strings.Contains(out, "flags not read (pass --flags)") {
		t.Errorf("status without --flags:\n%s", out)
	}
	for _, bad := range [][]string{{"--flags", "nosuch x"}, {"--flags", "static 150"}, {"--window", "-1m"}, {"--flags", "flagd /no/such/flags.json"}} {
		if out, err := runCLI(t, append([]string{"rollout", "status", "--database-url", url}, bad...)...); err == nil {
			t.Errorf("status %v accepted:\n%s", bad, out)
		}
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
	if !strings.Contains(out, "linkedin\n  flags:  flags not read (pass --flags)\n  guard:  running") {
		t.Errorf("status after the resume:\n%s", out)
	}
}
