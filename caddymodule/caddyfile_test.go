package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		"bad key id":  {DatabaseURL: "postgres://x/y", MasterKey: testKey(1), MasterKeyID: "zero"},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		err := app.Provision(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s: provisioned", name)
		}
		app.Cleanup()
	}
}
