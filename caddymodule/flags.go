package caddymodule

import (
	"net"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/open-feature/go-sdk/openfeature"

	"github.com/credgate/credgate/flags"
)

// FlagProvider is a module in the credgate.flags namespace: it builds the
// OpenFeature provider the rollout evaluates. A custom build can add one
// (LaunchDarkly, Unleash …) without touching credgate: register a module
// "credgate.flags.<name>" that implements this interface and, for the
// Caddyfile, caddyfile.Unmarshaler.
type FlagProvider interface {
	// OpenFeatureProvider returns the provider. It must not do I/O: it
	// runs in Provision, and the rollout initialises the provider in the
	// background when the app starts.
	OpenFeatureProvider() (openfeature.FeatureProvider, error)
}

func init() {
	caddy.RegisterModule(FlagdFileFlags{})
	caddy.RegisterModule(FlagdRPCFlags{})
	caddy.RegisterModule(StaticFlags{})
}

// FlagdFileFlags evaluates a flagd flag file in process, applying changes
// to the file without a restart. Caddyfile: `flags flagd <path>`.
type FlagdFileFlags struct {
	// Path of the flag file (see flags/flags.example.json). Required.
	Path string `json:"path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (FlagdFileFlags) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "credgate.flags.flagd", New: func() caddy.Module { return new(FlagdFileFlags) }}
}

// OpenFeatureProvider builds the flagd in-process provider.
func (f *FlagdFileFlags) OpenFeatureProvider() (openfeature.FeatureProvider, error) {
	return flags.FlagdFile(caddy.NewReplacer().ReplaceKnown(f.Path, ""))
}

// UnmarshalCaddyfile parses `flagd <path>`.
func (f *FlagdFileFlags) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // provider name
	if !d.AllArgs(&f.Path) {
		return d.Err("credgate: flags flagd takes the path of a flag file")
	}
	return nil
}

// FlagdRPCFlags evaluates against a shared flagd daemon. Caddyfile:
// `flags flagd_rpc <host:port> [tls <ca.pem>]`.
type FlagdRPCFlags struct {
	// Host of the flagd daemon. Required.
	Host string `json:"host,omitempty"`
	// Port of its evaluation API. Default 8013.
	Port uint16 `json:"port,omitempty"`
	// TLSCA, if set, enables TLS with this CA certificate file.
	TLSCA string `json:"tls_ca,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (FlagdRPCFlags) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "credgate.flags.flagd_rpc", New: func() caddy.Module { return new(FlagdRPCFlags) }}
}

// OpenFeatureProvider builds the flagd RPC provider.
func (f *FlagdRPCFlags) OpenFeatureProvider() (openfeature.FeatureProvider, error) {
	return flags.FlagdRPC(f.Host, f.Port, f.TLSCA)
}

// UnmarshalCaddyfile parses `flagd_rpc <host[:port]> [tls <ca.pem>]`.
func (f *FlagdRPCFlags) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if !d.NextArg() {
		return d.Err("credgate: flags flagd_rpc takes host:port")
	}
	host, port, err := net.SplitHostPort(d.Val())
	if err != nil {
		host = d.Val()
	} else {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return d.Errf("credgate: flags flagd_rpc: bad port %q", port)
		}
		f.Port = uint16(p)
	}
	f.Host = host
	if d.NextArg() {
		if d.Val() != "tls" || !d.NextArg() {
			return d.Err("credgate: flags flagd_rpc: expected `tls <ca.pem>`")
		}
		f.TLSCA = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// StaticFlags sends a fixed percentage of users to the new flow, bucketed
// exactly like flagd. Caddyfile: `flags static <percent>`.
type StaticFlags struct {
	// Percent of users on the new flow, 0–100. 0 also turns the kill
	// switch off.
	Percent int `json:"percent"`
}

// CaddyModule returns the Caddy module information.
func (StaticFlags) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "credgate.flags.static", New: func() caddy.Module { return new(StaticFlags) }}
}

// OpenFeatureProvider builds the static provider.
func (f *StaticFlags) OpenFeatureProvider() (openfeature.FeatureProvider, error) {
	return flags.Static(f.Percent)
}

// UnmarshalCaddyfile parses `static <percent>` (a trailing % is allowed).
func (f *StaticFlags) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	var raw string
	if !d.AllArgs(&raw) {
		return d.Err("credgate: flags static takes a percentage")
	}
	p, err := strconv.Atoi(trimPercent(raw))
	if err != nil || p < 0 || p > 100 {
		return d.Errf("credgate: flags static: percentage must be a whole number from 0 to 100, got %q", raw)
	}
	f.Percent = p
	return nil
}

func trimPercent(s string) string {
	if len(s) > 0 && s[len(s)-1] == '%' {
		return s[:len(s)-1]
	}
	return s
}

// Interface guards.
var (
	_ FlagProvider          = (*FlagdFileFlags)(nil)
	_ FlagProvider          = (*FlagdRPCFlags)(nil)
	_ FlagProvider          = (*StaticFlags)(nil)
	_ caddyfile.Unmarshaler = (*FlagdFileFlags)(nil)
	_ caddyfile.Unmarshaler = (*FlagdRPCFlags)(nil)
	_ caddyfile.Unmarshaler = (*StaticFlags)(nil)
)
