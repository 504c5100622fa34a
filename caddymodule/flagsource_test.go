package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/credgate/credgate/internal/pgtest"
)

// The production Caddyfile names its flag file only through
// CREDGATE_FLAGS_FILE: without it, it refuses to start, naming the
// variable, where it used to fall back to the example file relative to
// the working directory and move that file's share of users silently
// (issue 26, item 3). The rollout commands reading it say the same.
func TestTheProductionCaddyfileRequiresItsFlagFile(t *testing.T) {
	src, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"DATABASE_URL": pgtest.Database(t), "ENCRYPTION_MASTER_KEY": testKey(1),
		"SUPABASE_PROJECT_URL": "https://abcd.supabase.co", "SUPABASE_PUBLISHABLE_KEY": "sb_publishable_validate",
		"SUPABASE_JWT_SECRET": "validate-only-secret-validate-only-secret", "CREDGATE_ADMIN_TOKEN": "validate-only-admin-token",
		"CREDGATE_SERVICE_TOKEN": "validate-only-service-token",
		"TWITTER_CLIENT_ID":      "x", "TWITTER_CLIENT_SECRET": "x", "LINKEDIN_CLIENT_ID": "x", "LINKEDIN_CLIENT_SECRET": "x",
		"FACEBOOK_CLIENT_ID": "x", "FACEBOOK_CLIENT_SECRET": "x", "INSTAGRAM_CLIENT_ID": "x", "INSTAGRAM_CLIENT_SECRET": "x",
	} {
		t.Setenv(k, v)
	}
	validate := func() error {
		t.Helper()
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile"})
		if err != nil {
			return err
		}
		var c caddy.Config
		if err := json.Unmarshal(cfg, &c); err != nil {
			t.Fatal(err)
		}
		return caddy.Validate(&c)
	}

	t.Setenv("CREDGATE_FLAGS_FILE", "")
	os.Unsetenv("CREDGATE_FLAGS_FILE")
	err = validate()
	if err == nil || !strings.Contains(err.Error(), "CREDGATE_FLAGS_FILE") {
		t.Fatalf("without CREDGATE_FLAGS_FILE: %v, want a refusal naming it", err)
	}
	out, err := runCLI(t, "rollout", "status", "--config", "../Caddyfile")
	oneErrorLine(t, "rollout status --config ../Caddyfile", out, err, "set CREDGATE_FLAGS_FILE")

	flagFile := filepath.Join(t.TempDir(), "flags.json")
	example, err := os.ReadFile("../flags/flags.example.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flagFile, example, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDGATE_FLAGS_FILE", flagFile)
	if err := validate(); err != nil {
		t.Fatalf("with CREDGATE_FLAGS_FILE: %v", err)
	}
}
