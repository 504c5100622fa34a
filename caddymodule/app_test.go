package caddymodule

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/pgtest"
)

// runningApp loads config into the process-wide Caddy and returns the
// credgate app it started.
func runningApp(t *testing.T, db, appJSON string) *App {
	t.Helper()
	var app map[string]any
	if err := json.Unmarshal([]byte(appJSON), &app); err != nil {
		t.Fatal(err)
	}
	app["database_url"], app["master_key"] = db, testKey(1)
	appBytes, _ := json.Marshal(app)
	cfg := `{"admin":{"disabled":true},"apps":{"credgate":` + string(appBytes) + `}}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	running, err := caddy.ActiveContext().App("credgate")
	if err != nil {
		t.Fatal(err)
	}
	return running.(*App)
}

func decideWithin(t *testing.T, app *App, want flags.Arm) flags.Decision {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := app.Rollout().Decide(context.Background(), "11111111-1111-1111-1111-111111111111", "twitter")
		if d.Arm == want || time.Now().After(deadline) {
			return d
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The app builds the rollout from its flags module, starts the provider
// in the background, and a config reload swaps it.
func TestAppRolloutFromConfigAndReload(t *testing.T) {
	// Not parallel: it drives the process-wide Caddy instance.
	path := filepath.Join(t.TempDir(), "flags.json")
	all := `{"flags":{"oauth-new-flow-enabled":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"},
		"oauth-new-flow":{"state":"ENABLED","variants":{"new":"new","legacy":"legacy"},"defaultVariant":"legacy",
		"targeting":{"fractional":[["new",100],["legacy",0]]}}}}`
	os.WriteFile(path, []byte(all), 0o644)
	t.Cleanup(func() { caddy.Stop() })
	db := pgtest.Database(t)

	pathJSON, _ := json.Marshal(path)
	app := runningApp(t, db, `{"flags":{"provider":"flagd","path":`+string(pathJSON)+`}}`)
	if d := decideWithin(t, app, flags.ArmNew); d.Arm != flags.ArmNew || d.Reason != flags.ReasonRollout {
		t.Fatalf("flagd at 100%%: %+v", d)
	}

	app = runningApp(t, db, `{"flags":{"provider":"static","percent":0}}`)
	if d := decideWithin(t, app, flags.ArmLegacy); d.Arm != flags.ArmLegacy || d.Reason != flags.ReasonKillSwitch {
		t.Fatalf("static 0: %+v", d)
	}

	// No flags configured: everyone stays legacy.
	app = runningApp(t, db, `{}`)
	if d := decideWithin(t, app, flags.ArmLegacy); d.Arm != flags.ArmLegacy {
		t.Fatalf("no provider: %+v", d)
	}

	// A missing flag file does not stop Caddy: legacy until it exists,
	// then it applies with no reload.
	missingPath := filepath.Join(t.TempDir(), "missing.json")
	missing, _ := json.Marshal(missingPath)
	app = runningApp(t, db, `{"flags":{"provider":"flagd","path":`+string(missing)+`}}`)
	if d := app.Rollout().Decide(context.Background(), "u1", "twitter"); d.Arm != flags.ArmLegacy {
		t.Fatalf("missing flag file: %+v", d)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(missingPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if d := decideWithin(t, app, flags.ArmNew); d.Arm != flags.ArmNew {
		t.Fatalf("the flag file appeared, but: %+v", d)
	}
}
