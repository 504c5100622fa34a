package caddymodule

import (
	"time"

	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The handlers read their blocks through caddyfile.UnmarshalModule too,
// nested in another block, as reverse_proxy reads its transports: a
// config of another module can embed them.
func TestTheHandlersUnmarshalAsModulesInNestedBlocks(t *testing.T) {
	d := caddyfile.NewTestDispenser(`outer {
		credgate_tokens {
			service_token tok-1
			min_validity 2m
			serve_legacy_plaintext
		}
		credgate_egress {
			service_token tok-2
			max_in_flight 8
		}
		credgate {
			public_origin https://app.example.com
			legacy off
		}
		after
	}`)
	d.Next()
	got := map[string]caddyfile.Unmarshaler{}
	var last string
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if name == "after" {
			last = name
			continue
		}
		m, err := caddyfile.UnmarshalModule(d, "http.handlers."+name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got[name] = m
	}
	if last != "after" {
		t.Error("the block after the handlers' was not reached: an unmarshaler read past its own block")
	}
	tokens, _ := got["credgate_tokens"].(*TokenAPI)
	if tokens == nil || tokens.ServiceToken != "tok-1" || time.Duration(tokens.MinValidity) != 2*time.Minute || !tokens.ServeLegacyPlaintext {
		t.Errorf("credgate_tokens: %+v", tokens)
	}
	egress, _ := got["credgate_egress"].(*Egress)
	if egress == nil || egress.ServiceToken != "tok-2" || egress.MaxInFlight != 8 {
		t.Errorf("credgate_egress: %+v", egress)
	}
	handler, _ := got["credgate"].(*Handler)
	if handler == nil || handler.PublicOrigin != "https://app.example.com" || handler.Legacy != "off" {
		t.Errorf("credgate: %+v", handler)
	}
	// A mistake in a nested block is still named.
	bad := caddyfile.NewTestDispenser("credgate_egress {\n\tmax_in_flight -1\n}")
	bad.Next()
	if _, err := caddyfile.UnmarshalModule(bad, "http.handlers.credgate_egress"); err == nil {
		t.Error("max_in_flight -1 was accepted")
	}
}
