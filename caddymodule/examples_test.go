package caddymodule

import (
	"encoding/json"
	"net"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
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
