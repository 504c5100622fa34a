package caddymodule

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
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

// sourceLog announces each change in where the rollout comes from (flag
// file, flagd daemon) once in the log, and keeps the last for
// service-health. The flag modules share it.
type sourceLog struct {
	logger *zap.Logger
	// last is behind a pointer: Caddy copies module values.
	last *atomic.Pointer[flags.SourceEvent]
	// live, when set, asks the provider for its state on demand.
	live func() flags.SourceEvent
}

func (s *sourceLog) provision(ctx caddy.Context) {
	s.logger = ctx.Logger()
	s.last = new(atomic.Pointer[flags.SourceEvent])
}

// event logs a change once, at info (or error for a problem), and keeps
// it for service-health.
func (s *sourceLog) event(e flags.SourceEvent) {
	if s.last == nil || s.logger == nil {
		return // not provisioned (a test building the provider alone)
	}
	s.last.Store(&e)
	fields := []zap.Field{zap.String("source", e.Kind), zap.String("from", e.Source), zap.String("state", string(e.State))}
	switch {
	case e.Problem != "":
		s.logger.Error("rollout source not (fully) in force", append(fields, zap.String("problem", e.Problem))...)
	case e.Rollout != "":
		s.logger.Info("rollout in force", append(fields, zap.String("rollout", e.Rollout))...)
	default:
		s.logger.Info("rollout source ready", fields...)
	}
}

// SourceState reports the rollout's source for service-health: ok when
// its current flags are in force, with its state (ready, stale, error),
// when they were loaded, and any problem.
func (s *sourceLog) SourceState() map[string]any {
	var e *flags.SourceEvent
	if s.live != nil {
		now := s.live()
		e = &now
	} else if s.last != nil {
		e = s.last.Load()
	}
	if e == nil {
		return map[string]any{"ok": false, "state": string(flags.SourceError), "error": "the rollout's source has not been read yet"}
	}
	out := map[string]any{"ok": e.State == flags.SourceReady, "source": e.Kind, "state": string(e.State)}
	if e.Kind == "file" {
		out["path"] = e.Source
	} else {
		out["address"] = e.Source
	}
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

// FlagdFileFlags evaluates a flagd flag file in process, applying changes
// to the file without a restart. Caddyfile: `flags flagd <path>`.
type FlagdFileFlags struct {
	// Path of the flag file (see flags/flags.example.json). Required,
	// with no default: a path that is empty once its placeholders are
	// replaced (an unset {env.CREDGATE_FLAGS_FILE}) refuses to start.
	Path string `json:"path,omitempty"`

	sourceLog
}

// Provision takes the logger that announces each rollout change, and
// refuses a path that is empty once its placeholders are replaced.
func (f *FlagdFileFlags) Provision(ctx caddy.Context) error {
	f.provision(ctx)
	_, err := f.ResolvedPath()
	return err
}

// envPlaceholder finds the variables a path reads at run time.
var envPlaceholder = regexp.MustCompile(`\{env\.([^{}]+)\}`)

// ResolvedPath is the flag file's path with its placeholders replaced.
// An empty one is an error naming the variable it reads, never a
// fallback: a rollout read from some default file would move users
// nobody chose to move.
func (f *FlagdFileFlags) ResolvedPath() (string, error) {
	path := caddy.NewReplacer().ReplaceKnown(f.Path, "")
	if strings.TrimSpace(path) != "" {
		return path, nil
	}
	var names []string
	for _, m := range envPlaceholder.FindAllStringSubmatch(f.Path, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		return "", errors.New("credgate: flags flagd needs the path of a flag file")
	}
	return "", fmt.Errorf("credgate: flags flagd %s: the flag file's path is empty: set %s to the rollout's flag file "+
		"(flags/flags.example.json is one with every platform at 0 %%)", f.Path, strings.Join(names, " and "))
}

// CaddyModule returns the Caddy module information.
func (FlagdFileFlags) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "credgate.flags.flagd", New: func() caddy.Module { return new(FlagdFileFlags) }}
}

// OpenFeatureProvider builds the flagd in-process provider.
func (f *FlagdFileFlags) OpenFeatureProvider() (openfeature.FeatureProvider, error) {
	path, err := f.ResolvedPath()
	if err != nil {
		return nil, err
	}
	return flags.FlagdFile(path, f.event)
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

	sourceLog
}

// Provision takes the logger that announces the daemon's state.
func (f *FlagdRPCFlags) Provision(ctx caddy.Context) error {
	f.provision(ctx)
	return nil
}

// CaddyModule returns the Caddy module information.
func (FlagdRPCFlags) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "credgate.flags.flagd_rpc", New: func() caddy.Module { return new(FlagdRPCFlags) }}
}

// OpenFeatureProvider builds the flagd RPC provider. It only builds a
// client: the provider connects in the background when the app starts,
// and keeps reconnecting for as long as it runs.
func (f *FlagdRPCFlags) OpenFeatureProvider() (openfeature.FeatureProvider, error) {
	p, err := flags.FlagdRPC(f.Host, f.Port, f.TLSCA, f.event)
	if err != nil {
		return nil, err
	}
	if r, ok := p.(flags.SourceReporter); ok {
		f.live = r.State
	}
	return p, nil
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
	_ caddy.Provisioner     = (*FlagdRPCFlags)(nil)
	_ FlagProvider          = (*FlagdRPCFlags)(nil)
	_ FlagProvider          = (*StaticFlags)(nil)
	_ caddyfile.Unmarshaler = (*FlagdFileFlags)(nil)
	_ caddyfile.Unmarshaler = (*FlagdRPCFlags)(nil)
	_ caddyfile.Unmarshaler = (*StaticFlags)(nil)
)
