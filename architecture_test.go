package credgate_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The import rules of docs/architecture.md: the core packages are plain Go
// libraries that know nothing of Caddy (caddymodule is the only glue), and
// the rollout and OAuth client know nothing of the database either. A
// package that breaks a rule fails here, naming what it pulled in.
func TestTheCorePackagesKeepTheirImportRules(t *testing.T) {
	const mod = "github.com/credgate/credgate/"
	core := []string{"answer", "backend", "connect", "egress", "flags", "gateway", "guard", "identity", "migrations", "oauth", "report", "sandbox", "sandbox/demoapp",
		"sandbox/supabaseauth", "secret", "telemetry", "vault", "webhook", "worker"}
	forbidden := map[string][]string{"": {"github.com/caddyserver/caddy/v2"}}
	for _, p := range []string{"flags", "oauth", "secret"} {
		forbidden[p] = []string{"github.com/jackc/pgx/v5"}
	}
	for _, p := range core {
		out, err := exec.Command("go", "list", "-deps", mod+p).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", p, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 {
			t.Fatalf("go list -deps %s listed %d packages: the check below would prove nothing", p, len(deps))
		}
		for _, bad := range append(forbidden[""], forbidden[p]...) {
			for _, d := range deps {
				if d == bad || strings.HasPrefix(d, bad+"/") {
					t.Errorf("%s imports %s (through its dependencies)", p, d)
					break
				}
			}
		}
		for _, d := range deps {
			if d == mod+"caddymodule" {
				t.Errorf("%s imports caddymodule", p)
			}
		}
	}
}
