package caddymodule

import (
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/open-feature/go-sdk/openfeature"
	"go.uber.org/zap"

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

	logger *zap.Logger
	// last is behind a pointer: Caddy copies module values.
	last *atomic.Pointer[flags.FileEvent]
}

// Provision takes the logger that announces each rollout change.
func (f *FlagdFileFlags) Provision(ctx caddy.Context) error {
	f.logger = ctx.Logger()
	f.last = new(atomic.Pointer[flags.FileEvent])
	return nil
}

// fileEvent logs a change once, at info (or error for a problem), and
// keeps it for service-health.
func (f *FlagdFileFlags) fileEvent(e flags.FileEvent) {
	if f.last == nil || f.logger == nil {
		return // not provisioned (a test building the provider alone)
	}
	f.last.Store(&e)
	switch {
	case e.Problem != "":
		f.logger.Error("flag file not (fully) in force", zap.String("path", e.Path), zap.String("problem", e.Problem))
	case e.Rollout != "":
		f.logger.Info("rollout in force", zap.String("path", e.Path), zap.String("rollout", e.Rollout))
	}
}

// SourceState reports the flag file for service-health: ok when its
// content is in force, with when it was read and any problem.
func (f *FlagdFileFlags) SourceState() map[string]any {
	var e *flags.FileEvent
	if f.last != nil {
		e = f.last.Load()
	}
	if e == nil {
		return map[string]any{"ok": false, "source": "file", "error": "the flag file has not been read yet"}
	}
	out := map[string]any{"ok": e.Problem == "", "source": "file", "path": e.Path}
	if !e.LoadedAt.IsZero() {
		out["loaded_at"] = e.LoadedAt.UTC().Format(time.RFC3339)
	}
	if e.Rollout != "" {
		out["rollout"] = e.Rollout
	}
	if e.Problem != "" {
		out["error"] = e.Problem
	}
	return out
}

// CaddyModule returns the Caddy module information.
func (FlagdFileFlags) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "credgate.flags.flagd", New: func() caddy.Module { return new(FlagdFileFlags) }}
}

// OpenFeatureProvider builds the flagd in-process provider.
func (f *FlagdFileFlags) OpenFeatureProvider() (openfeature.FeatureProvider, error) {
	return flags.FlagdFile(caddy.NewReplacer().ReplaceKnown(f.Path, ""), f.fileEvent)
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
	_ caddy.Provisioner     = (*FlagdFileFlags)(nil)
	_ FlagProvider          = (*FlagdRPCFlags)(nil)
	_ FlagProvider          = (*StaticFlags)(nil)
	_ caddyfile.Unmarshaler = (*FlagdFileFlags)(nil)
	_ caddyfile.Unmarshaler = (*FlagdRPCFlags)(nil)
	_ caddyfile.Unmarshaler = (*StaticFlags)(nil)
)
