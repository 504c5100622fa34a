package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/golang-jwt/jwt/v5"

	"github.com/credgate/credgate/identity"
)

// Invariant: a token is only ever accepted when it is an HS256 token
// signed with the secret, unexpired, whose sub is a UUID; no input
// panics.
func FuzzIdentityToken(f *testing.F) {
	secret := strings.Repeat("s", 40)
	good, _ := SignDevToken("11111111-1111-4111-8111-111111111111", secret, 3600e9)
	for _, s := range []string{good, "", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", good + "x",
		strings.Replace(good, ".", "..", 1), "Bearer " + good, strings.Repeat("a", 9000)} {
		f.Add(s)
	}
	id := &Identity{JWTSecret: secret}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: f.Context()})
	f.Cleanup(cancel)
	if err := id.provision(ctx); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		user, res := id.reader.Verifier.Verify(t.Context(), raw)
		if res != identity.OK {
			return
		}
		claims := jwt.MapClaims{}
		tok, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()).
			ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return []byte(secret), nil })
		if err != nil || !tok.Valid || claims["sub"] != user {
			t.Fatalf("accepted %q as %q, but it does not verify: %v", raw, user, err)
		}
	})
}

// Invariant: the Caddyfile parsers answer arbitrary input with a config
// or an error, never a panic.
func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"{\n\tcredgate {\n\t\tdatabase_url x\n\t\tflags static 25\n\t\tguard {\n\t\t\tmin_success 0.9\n\t\t}\n\t}\n}\n",
		"{\n\tcredgate {\n\t\tprovider acme {\n\t\t\tkind generic\n\t\t\tauth_style basic\n\t\t}\n\t}\n}\n",
		":8080 {\n\tcredgate {\n\t\tpublic_origin http://localhost:8080\n\t\tstart_limit 10/1m\n\t\tidentity {\n\t\t\tjwt_secret x\n\t\t}\n\t}\n}\n",
		"{\n\tcredgate {\n\t\tflags flagd_rpc host:99999 tls\n\t}\n}\n",
		":8080 {\n\tcredgate_tokens {\n\t\tservice_token x\n\t}\n}\n",
		"{\n\tcredgate {\n\t\tguard {\n\t\t\twindow\n\t\t}\n\t}\n}\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	})
}
