package caddymodule

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/caddylog"
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
	if err := caddylog.Load(t, []byte(cfg)); err != nil {
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

// A keyring that lacks a key id sealing credentials refuses to start,
// naming the id; with allow_missing_keys it starts, and the health
// routes call those accounts undecryptable.
func TestStartRefusesMissingKeyIDs(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.connect(alice, "twitter")
	newKey := func(extra string) []byte {
		src := strings.Replace(h.caddyfile(""), "master_key "+testKey(1), "master_key "+testKey(2)+"\n\t\tmaster_key_id 2"+extra, 1)
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	err := caddylog.Load(t, newKey(""))
	if err == nil || !strings.Contains(err.Error(), "key ids 1 seal credentials") {
		t.Fatalf("a keyring without key 1: %v", err)
	}
	if n := h.count(`SELECT count(*) FROM encryption_keys WHERE id = 2`); n != 0 {
		t.Fatalf("the refused start recorded key id 2")
	}
	if err := caddylog.Load(t, newKey("\n\t\tallow_missing_keys")); err != nil {
		t.Fatalf("allow_missing_keys: %v", err)
	}
	resp, body := h.do("GET", "/api/credentials/health-check", alice, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"undecryptable"`) {
		t.Fatalf("health-check: %d %s", resp.StatusCode, body)
	}
	resp, body = h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
	if !strings.Contains(string(body), `"missing_key_ids":[1]`) {
		t.Fatalf("service-health: %d %s", resp.StatusCode, body)
	}
}
