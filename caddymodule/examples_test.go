package caddymodule

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/credgate/credgate/internal/caddylog"
)

// The example `make demo` runs carries public secrets (a JWT secret, an
// admin token, a service token) and a sandbox whose fault API needs no
// authentication: every one of its listeners is on loopback, never on
// the machine's other networks.
func TestTheExampleListensOnLoopbackOnly(t *testing.T) {
	src, err := os.ReadFile("../examples/sandbox.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDGATE_FLAGS_FILE", "flags.json")
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "sandbox.Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Apps.HTTP.Servers) < 4 {
		t.Fatalf("only %d servers in the example", len(cfg.Apps.HTTP.Servers))
	}
	for name, srv := range cfg.Apps.HTTP.Servers {
		if len(srv.Listen) == 0 {
			t.Errorf("%s listens on every interface (no listen address)", name)
		}
		for _, addr := range srv.Listen {
			host, _, err := net.SplitHostPort(addr)
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				t.Errorf("%s listens on %q, not on loopback", name, addr)
			}
		}
	}
}

// A config serving a public origin refuses to start with the published
// development secrets (the example's JWT secret, admin token, service
// token) or a short admin token, naming each option and never the value;
// on a loopback origin (the demo, these tests) they still work, and a
// public origin with secrets of its own starts.
func TestPublicOriginsRefuseTheDevelopmentSecrets(t *testing.T) {
	h := newHarness(t, harnessOptions{tokenAPI: "service_token development-service-token-do-not-use"})
	base := h.caddyfile("")
	load := func(src string) error {
		t.Helper()
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err != nil {
			t.Fatal(err)
		}
		return caddylog.Load(t, cfg)
	}
	public := strings.Replace(base, "public_origin "+h.origin, "public_origin https://app.example.com", 1)
	if public == base {
		t.Fatal("no public_origin in the harness's Caddyfile")
	}
	devJWT := strings.Replace(public, "jwt_secret "+devSecret, "jwt_secret development-only-jwt-secret-do-not-use-in-production", 1)
	devAdmin := strings.Replace(devJWT, "admin_token "+adminToken, "admin_token development-admin-token", 1)
	err := load(devAdmin)
	if err == nil {
		t.Fatal("a public origin started with the development secrets")
	}
	for _, want := range []string{"https://app.example.com", "credgate identity jwt_secret is the published development value",
		"credgate handler admin_token is the published development value", "credgate_tokens service_token is the published development value"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	for _, secret := range []string{"development-admin-token", "development-service-token-do-not-use", "do-not-use-in-production"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the refusal repeats a secret: %v", err)
		}
	}
	short := strings.Replace(strings.Replace(public, "admin_token "+adminToken, "admin_token short", 1),
		"service_token development-service-token-do-not-use", "service_token "+serviceToken, 1)
	if err := load(short); err == nil || !strings.Contains(err.Error(), "admin_token is shorter than 16 characters") {
		t.Errorf("a short admin token on a public origin: %v", err)
	}
	// Secrets of its own: it starts.
	if err := load(strings.Replace(public, "service_token development-service-token-do-not-use", "service_token "+serviceToken, 1)); err != nil {
		t.Errorf("a public origin with secrets of its own: %v", err)
	}
	// The same development secrets on loopback: the demo's case.
	if err := load(strings.Replace(strings.Replace(base, "jwt_secret "+devSecret, "jwt_secret development-only-jwt-secret-do-not-use-in-production", 1),
		"admin_token "+adminToken, "admin_token development-admin-token", 1)); err != nil {
		t.Errorf("the development secrets on a loopback origin: %v", err)
	}
}

// A secret written out in the config (not {env.NAME}) ends up in Caddy's
// debug log, whose "adjusted config" line prints the config: credgate
// warns at start for each such option, naming it and never its value;
// a secret read from the environment draws no warning.
func TestLiteralSecretsAreWarnedOf(t *testing.T) {
	logFile := t.TempDir() + "/caddy.log"
	t.Setenv("CREDGATE_TEST_ADMIN_TOKEN", "admin-token-from-the-environment")
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken,
		caddyGlobals: "log {\n\t\toutput file " + logFile + "\n\t\tlevel DEBUG\n\t}",
		extraSite:    "admin_token {env.CREDGATE_TEST_ADMIN_TOKEN}"})
	_ = h
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(raw)
	for _, want := range []string{"credgate master_key is written literally", "credgate provider twitter client_secret is written literally",
		"credgate identity jwt_secret is written literally", "credgate_tokens service_token is written literally"} {
		if !strings.Contains(log, want) {
			t.Errorf("no warning %q in the log", want)
		}
	}
	if strings.Contains(log, "admin_token is written literally") {
		t.Error("a secret read from the environment was warned of")
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "written literally") && (strings.Contains(line, serviceToken) || strings.Contains(line, devSecret)) {
			t.Errorf("the warning repeats the secret: %s", line)
		}
	}
}
