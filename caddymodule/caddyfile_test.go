package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// TestCaddyfileAdapt runs the golden files in testdata/caddyfile. Each holds
// a Caddyfile, a line of dashes, and either the expected JSON or
// "error: <text the adapter's error must contain>".
func TestCaddyfileAdapt(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/caddyfile/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			input, want, ok := strings.Cut(string(raw), "----------\n")
			if !ok {
				t.Fatal("golden file has no ---------- separator")
			}
			got, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(input), map[string]any{"filename": f})
			if wantErr, isErr := strings.CutPrefix(want, "error: "); isErr {
				wantErr = strings.TrimSpace(wantErr)
				if err == nil || !strings.Contains(err.Error(), wantErr) {
					t.Fatalf("adapt error = %v, want one containing %q", err, wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "\t"); err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(pretty.String()) != strings.TrimSpace(want) {
				t.Errorf("adapted JSON differs.\n got:\n%s\nwant:\n%s", pretty.String(), want)
			}
		})
	}
}

func TestProvisionExpandsEnvironmentPlaceholders(t *testing.T) {
	t.Setenv("CG_TEST_DB", "postgres://db.internal/app")
	t.Setenv("CG_TEST_KEY", testKey(7))
	app := &App{DatabaseURL: "{env.CG_TEST_DB}", MasterKey: "{env.CG_TEST_KEY}", MasterKeyID: "3"}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer app.Cleanup()
	if app.poolKey != "postgres://db.internal/app" || app.keys.PrimaryID() != 3 {
		t.Errorf("provisioned database %q, key id %d", app.poolKey, app.keys.PrimaryID())
	}
}

func TestProvisionFailsClosedOnBadKeys(t *testing.T) {
	for name, app := range map[string]*App{
		"no key":      {DatabaseURL: "postgres://x/y"},
		"placeholder": {DatabaseURL: "postgres://x/y", MasterKey: "<generate-secure-key>"},
		"no database": {MasterKey: testKey(1)},
		// An unset variable: the message must not suggest --database-url.
		"empty database placeholder": {DatabaseURL: "{env.CREDGATE_TEST_UNSET_VARIABLE}", MasterKey: testKey(1)},
		"bad key id":                 {DatabaseURL: "postgres://x/y", MasterKey: testKey(1), MasterKeyID: "zero"},
		// The commands refuse these; the server used to read 2 and 16.
		"key id with junk": {DatabaseURL: "postgres://x/y", MasterKey: testKey(1), MasterKeyID: "2abc"},
		"hex key id":       {DatabaseURL: "postgres://x/y", MasterKey: testKey(1), MasterKeyID: "0x10"},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		err := app.Provision(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s: provisioned", name)
		} else if strings.Contains(err.Error(), "--database-url") {
			t.Errorf("%s: %v (caddy run has no --database-url)", name, err)
		}
		app.Cleanup()
	}
}

// The example Caddyfile ships with the guard off, and its commented-out
// guard block works as written once uncommented.
func TestExampleCaddyfileGuardBlock(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	adapt := func(src string) map[string]any {
		t.Helper()
		out, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
		if err != nil {
			t.Fatalf("adapt: %v", err)
		}
		var cfg struct {
			Apps struct {
				Credgate map[string]any `json:"credgate"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		return cfg.Apps.Credgate
	}
	if g, on := adapt(string(raw))["guard"]; on {
		t.Fatalf("the example Caddyfile turns the guard on: %v", g)
	}
	var lines []string
	inGuard := false
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "# guard {" {
			inGuard = true
		}
		if inGuard {
			line = strings.Replace(line, "# ", "", 1)
		}
		if inGuard && trimmed == "# }" {
			inGuard = false
		}
		lines = append(lines, line)
	}
	g, on := adapt(strings.Join(lines, "\n"))["guard"].(map[string]any)
	if !on || g["min_success"] != 0.95 || g["max_gap"] != 0.05 || g["min_samples"] != float64(50) || g["window"] != float64(10*time.Minute) {
		t.Fatalf("the uncommented guard block: %v", g)
	}
}
