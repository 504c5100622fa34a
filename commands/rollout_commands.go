package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/spf13/cobra"

	"github.com/credgate/credgate/caddymodule"
	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
)

// `caddy credgate rollout status|set|resume`: the rollout from the
// command line. status and resume work on the database directly, so they
// need no running instance (GET /api/credentials/rollout and POST
// /api/credentials/rollout/resume are the same through a running one);
// set edits the flag file, which every instance reads by name.

// defaultPlatforms are the platforms the commands list, without --config,
// besides any the flag file names or the database has outcomes or a halt
// for: the built-in ones (oauth.Platforms), sorted.
func defaultPlatforms() []string { return slices.Sorted(slices.Values(oauth.Platforms)) }

// rolloutSetPreflight, when set, is asked by `rollout set` before it
// writes a percentage above 0, with the platforms the change reaches; an
// error refuses the change and is what the operator reads. It is the
// place for checks that need more than the flag file (for one, that the
// app's back end reads its tokens through credgate before users move).
var rolloutSetPreflight func(ctx context.Context, cmd *cobra.Command, platforms []string, percent float64) error

func rolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Shows and sets the rollout per platform, and resumes a platform the guard halted",
	}
	cmd.AddCommand(rolloutStatusCommand(), rolloutSetCommand(), rolloutResumeCommand())
	return cmd
}

// The flags --flags and --config, shared by status and set.
const (
	flagsFlagHelp  = `the flag source, as in the Caddyfile ("flagd <path>", "flagd_rpc <host:port>", "static <percent>"); overrides --config's`
	configFlagHelp = "the Caddyfile (or JSON config) credgate runs with: its flag source, guard and providers"
)

func rolloutStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   `status [--config <Caddyfile>] [--flags "flagd /etc/credgate/flags.json"] [--window 10m] [--json]`,
		Short: "Prints each platform's percentage in force, kill switch, guard and windowed success of both arms",
		Long: `Prints, for each platform: the percentage of users the flags send to the
new flow and the kill switch; the rollout guard as configured, and whether
it has halted the platform; the success of both arms over the window; and
the window's decisions at the app's connect route by arm and reason
(no_identity: users credgate did not recognise, whom no percentage moves),
all summed over every replica (each adds its counts every second).

The flag source and the guard come from --config, the Caddyfile credgate
runs with; --flags names the source instead ("flagd <path>",
"flagd_rpc <host:port>" or "static <percent>"). A flag file's percentage
is read from its rule, exactly; a rule whose answer depends on more than
the platform, and a flagd daemon, are measured on 1,000 sample user ids,
and the output says so. The window is the guard's (from --config), else
10m.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			cfg, err := loadRolloutConfig(cmd)
			if err != nil {
				return err
			}
			window, _ := cmd.Flags().GetDuration("window")
			if !cmd.Flags().Changed("window") && cfg != nil && cfg.guard != nil {
				window = cfg.guard.Config().Window
			}
			// The window is made of 10 s buckets: a shorter one would
			// miss the flows of the bucket under way.
			if window < 10*time.Second {
				return errors.New("--window must be at least 10s (the shared window is counted in 10 s buckets)")
			}
			source, err := rolloutFlagSource(cmd, cfg)
			if err != nil {
				return err
			}
			pool, err := vault.OpenPool(ctx, rolloutDatabaseURL(cmd, cfg))
			if err != nil {
				return err
			}
			defer pool.Close()
			platforms := defaultPlatforms()
			if cfg != nil && len(cfg.platforms) > 0 {
				platforms = cfg.platforms
			}
			if source != nil && source.file != nil {
				platforms = union(platforms, source.file.Platforms())
			}
			status, err := guard.ReadRolloutStatus(ctx, pool, nil, window, platforms)
			if err != nil {
				return err
			}
			if source != nil {
				names := make([]string, len(status))
				for i, s := range status {
					names[i] = s.Platform
				}
				inForce, err := source.inForce(ctx, names)
				if err != nil {
					return err
				}
				for i := range status {
					status[i].Flags = &inForce[i]
				}
			}
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				out := map[string]any{"window": window.String(), "platforms": status}
				if cfg != nil {
					out["guard"] = guardSettings(cfg.guard)
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			printRolloutStatus(cmd.OutOrStdout(), status, window, cfg, source)
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL, else --config's database_url)")
	cmd.Flags().String("config", "", configFlagHelp)
	cmd.Flags().String("flags", "", flagsFlagHelp)
	cmd.Flags().Duration("window", guard.DefaultWindow, "the success-rate window (default: the guard's from --config, else 10m)")
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

// guardSettings is the guard as configured, for --json: the admin
// route's shape.
func guardSettings(g *caddymodule.GuardConfig) map[string]any {
	if g == nil {
		return map[string]any{"enabled": false}
	}
	c := g.Config()
	return map[string]any{"enabled": true, "min_success": c.MinSuccess, "max_gap": c.MaxGap, "min_samples": c.MinSamples, "window": c.Window.String()}
}

func printRolloutStatus(w io.Writer, status []guard.RolloutStatus, window time.Duration, cfg *rolloutConfig, source *rolloutSource) {
	for _, s := range status {
		flagsText := "not read (pass --config or --flags)"
		if cfg != nil && source == nil {
			flagsText = "none configured: legacy for everyone"
		}
		switch f := s.Flags; {
		case f == nil:
		case !f.Ready:
			flagsText = "the flag source did not answer within 5 s"
		case f.Problem != "":
			flagsText = "flags failing (" + f.Problem + "): legacy for everyone"
		case !f.KillSwitchOn:
			flagsText = fmt.Sprintf("kill switch off (legacy for everyone); split %s", percentText(*f))
		default:
			flagsText = fmt.Sprintf("%s, kill switch on", percentText(*f))
		}
		fmt.Fprintf(w, "%s\n  flags:  %s\n  guard:  %s\n  last %s: new flow %s, legacy flow %s\n",
			s.Platform, flagsText, guardText(s, cfg), window, rateText(s.Guard.New), rateText(s.Guard.Legacy))
		fmt.Fprintf(w, "  decisions: %s\n", decisionsText(s.Decisions))
		fmt.Fprintf(w, "  back end: %s\n", backEndText(s.BackEnd))
		if warning := identityWarning(s.Decisions); warning != "" {
			fmt.Fprintf(w, "  ⚠ %s\n", warning)
		}
	}
}

// backEndText says whether the app's back end gets this platform's
// tokens through credgate: "12 token API and 0 egress reads in the last
// 1h0m0s", with what it means when there are none.
func backEndText(b guard.BackEndReads) string {
	text := fmt.Sprintf("%d token API and %d egress reads in the last %s", b.TokenAPI, b.Egress, b.Window)
	switch {
	case b.TransitionMode:
		text += "; transition mode on: credgate also writes tokens to the app's columns"
	case b.Total() == 0:
		text += "; transition mode off: users moved now would get tokens the back end does not see (RUNBOOK, Phase 3½)"
	}
	return text
}

// percentText is "25.0 % new", or "24.4 % new (sampled on 1,000 user
// ids: why)".
func percentText(f flags.InForce) string {
	text := fmt.Sprintf("%.1f %% new", f.NewPercent)
	if f.Measured == flags.MeasuredSampled {
		text += fmt.Sprintf(" (sampled on %s user ids", thousands(f.Samples))
		if f.Note != "" {
			text += ": " + f.Note
		}
		text += ")"
	}
	return text
}

// thousands is n with a comma every three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// guardText is the guard as configured (known only with --config) and
// any halt the database holds for the platform.
func guardText(s guard.RolloutStatus, cfg *rolloutConfig) string {
	halt := ""
	if h := s.Guard.Halt; h != nil {
		halt = fmt.Sprintf("HALTED since %s: %s (resume: caddy credgate rollout resume --platform %s)",
			h.At.UTC().Format(time.RFC3339), h.Reason, s.Platform)
	}
	switch {
	case cfg == nil && halt != "":
		return halt
	case cfg == nil:
		return "not known (pass --config)"
	case cfg.guard == nil && halt != "":
		// App.halted: without the guard, a latched halt decides nothing.
		return "off (not configured); the database still holds a halt, applied only while the guard is on: " + halt
	case cfg.guard == nil:
		return "off (not configured)"
	}
	c := cfg.guard.Config()
	settings := fmt.Sprintf("on (min_success %.3f, max_gap %.3f, min_samples %d, window %s)", c.MinSuccess, c.MaxGap, c.MinSamples, c.Window)
	if halt != "" {
		return halt + "; " + settings
	}
	return settings
}

// decisionsText is "12 new (rollout), 3 legacy (no_identity)", or "none".
func decisionsText(list []guard.ReasonCount) string {
	if len(list) == 0 {
		return "none at the app's connect route"
	}
	parts := make([]string, len(list))
	for i, c := range list {
		parts[i] = fmt.Sprintf("%d %s (%s)", c.Decisions, c.Arm, c.Reason)
	}
	return strings.Join(parts, ", ")
}

// identityWarning names the users no rollout can move: those who reached
// the connect route with no identity credgate recognises.
func identityWarning(list []guard.ReasonCount) string {
	var total, unknown int64
	for _, c := range list {
		total += c.Decisions
		if c.Reason == string(flags.ReasonNoIdentity) {
			unknown += c.Decisions
		}
	}
	if unknown == 0 || unknown*2 < total {
		return ""
	}
	return fmt.Sprintf("%d of %d decisions had no identity credgate recognises: those users stay on the legacy flow whatever the percentage (credgate_identity_total by result; docs/identity.md)", unknown, total)
}

// rateText is an arm's success rate in the window, success / (success +
// failure), with the failures a user could have caused on purpose apart:
// the guard counts them only once there are min_samples of them
// (docs/rollout.md).
func rateText(r guard.Rate) string {
	text := "no flows"
	if r.Samples() > 0 {
		text = fmt.Sprintf("%.1f %% of %d", 100*r.Success(), r.Samples())
	}
	if r.UserFailures > 0 {
		text += fmt.Sprintf(" (+%d failed a way a user could cause, one per account)", r.UserFailures)
	}
	return text
}

// rolloutConfig is what the rollout commands read from --config: the
// credgate app's flag source, guard and providers, as Caddy would run
// them.
type rolloutConfig struct {
	path string
	// flags is the flag source module, nil when none is configured.
	flags caddy.Module
	// guard is nil when the guard is off.
	guard       *caddymodule.GuardConfig
	platforms   []string
	databaseURL string
}

// loadRolloutConfig reads --config, nil without it.
func loadRolloutConfig(cmd *cobra.Command) (*rolloutConfig, error) {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		return nil, nil
	}
	credgate, err := credgateAppJSON(path)
	if err != nil {
		return nil, err
	}
	var app struct {
		DatabaseURL string                     `json:"database_url"`
		Flags       json.RawMessage            `json:"flags"`
		Guard       *caddymodule.GuardConfig   `json:"guard"`
		Providers   map[string]json.RawMessage `json:"providers"`
	}
	if err := json.Unmarshal(credgate, &app); err != nil {
		return nil, fmt.Errorf("--config %s: the credgate app: %w", path, err)
	}
	cfg := &rolloutConfig{path: path, guard: app.Guard, platforms: slices.Sorted(maps.Keys(app.Providers)),
		databaseURL: caddy.NewReplacer().ReplaceKnown(app.DatabaseURL, "")}
	if len(app.Flags) > 0 {
		var head struct {
			Provider string `json:"provider"`
		}
		_ = json.Unmarshal(app.Flags, &head)
		info, err := caddy.GetModule("credgate.flags." + head.Provider)
		if err != nil {
			return nil, fmt.Errorf("--config %s: unknown flag source %q", path, head.Provider)
		}
		mod := info.New()
		if err := json.Unmarshal(app.Flags, mod); err != nil {
			return nil, fmt.Errorf("--config %s: flags: %w", path, err)
		}
		cfg.flags = mod
	}
	return cfg, nil
}

// credgateAppJSON is the credgate app's JSON in the config at path, which
// the commands' --config names: a Caddyfile is adapted as `caddy run`
// would, a JSON config is read as it is.
func credgateAppJSON(path string) (json.RawMessage, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	raw := body
	if !json.Valid(body) {
		adapter := caddyconfig.GetAdapter("caddyfile")
		if adapter == nil {
			return nil, errors.New("--config: this build has no Caddyfile adapter; pass a JSON config")
		}
		// Warnings (an unformatted file …) are the adapter's business:
		// `caddy run` shows them, a command does not.
		raw, _, err = adapter.Adapt(body, map[string]any{"filename": path})
		if err != nil {
			return nil, fmt.Errorf("--config %s: %w", path, err)
		}
	}
	var doc struct {
		Apps struct {
			Credgate json.RawMessage `json:"credgate"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	if len(doc.Apps.Credgate) == 0 {
		return nil, fmt.Errorf("--config %s has no credgate app (the `credgate` global option)", path)
	}
	return doc.Apps.Credgate, nil
}

// rolloutDatabaseURL prefers the flag, then DATABASE_URL, then the
// config's database_url.
func rolloutDatabaseURL(cmd *cobra.Command, cfg *rolloutConfig) string {
	if u := databaseURL(cmd); u != "" || cfg == nil {
		return u
	}
	return cfg.databaseURL
}

// rolloutSource is the flag source the commands read: --flags, else
// --config's.
type rolloutSource struct {
	mod caddy.Module
	// For a flag file: its path and content, read once.
	path string
	data []byte
	file *flags.FlagSet
}

// rolloutFlagSource builds the flag source from --flags, else from cfg;
// nil when neither names one. A flag file is read now: a mistyped path must not
// read as "no flags".
func rolloutFlagSource(cmd *cobra.Command, cfg *rolloutConfig) (*rolloutSource, error) {
	var mod caddy.Module
	if line, _ := cmd.Flags().GetString("flags"); line != "" {
		m, err := flagModuleFrom(line)
		if err != nil {
			return nil, err
		}
		mod = m
	} else if cfg != nil && cfg.flags != nil {
		mod = cfg.flags
	}
	if mod == nil {
		return nil, nil
	}
	src := &rolloutSource{mod: mod}
	if f, ok := mod.(*caddymodule.FlagdFileFlags); ok {
		path, err := f.ResolvedPath()
		if err != nil {
			return nil, err
		}
		path, data, err := flags.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("flag file: %w", err)
		}
		set, err := flags.ParseFlagSet(data)
		if err != nil {
			return nil, fmt.Errorf("flag file %s: %w (a running credgate keeps the last good one)", path, err)
		}
		src.path, src.data, src.file = path, data, set
	}
	return src, nil
}

// flagModuleFrom builds the flag source module a Caddyfile flags line
// names ("flagd <path>" …).
func flagModuleFrom(line string) (caddy.Module, error) {
	d := caddyfile.NewTestDispenser(line)
	if !d.Next() {
		return nil, errors.New(`--flags: name a flag source: "flagd <path>", "flagd_rpc <host:port>" or "static <percent>"`)
	}
	info, err := caddy.GetModule("credgate.flags." + d.Val())
	if err != nil {
		return nil, fmt.Errorf("--flags: unknown flag source %q", d.Val())
	}
	mod := info.New()
	unm, ok := mod.(caddyfile.Unmarshaler)
	_, ok2 := mod.(caddymodule.FlagProvider)
	if !ok || !ok2 {
		return nil, fmt.Errorf("--flags: %s cannot be set up from the command line", d.Val())
	}
	d.Reset()
	if err := unm.UnmarshalCaddyfile(d); err != nil {
		return nil, fmt.Errorf("--flags: %w", err)
	}
	return mod, nil
}

// inForce is what the source puts in force for each platform. A flag file
// is read from its rule (flags.FileInForce); a static percentage is what
// it says; anything else (a flagd daemon) is asked for sample user ids.
// No provider that logs on its own is started: the output is the status
// and nothing else.
func (s *rolloutSource) inForce(ctx context.Context, platforms []string) ([]flags.InForce, error) {
	switch f := s.mod.(type) {
	case *caddymodule.FlagdFileFlags:
		list, err := flags.FileInForce(ctx, s.data, platforms)
		if err != nil {
			return nil, fmt.Errorf("flag file %s: %w (a running credgate keeps the last good one)", s.path, err)
		}
		return list, nil
	case *caddymodule.StaticFlags:
		out := make([]flags.InForce, len(platforms))
		for i, p := range platforms {
			out[i] = flags.InForce{Platform: p, Ready: true, KillSwitchOn: f.Percent > 0, NewPercent: float64(f.Percent), Measured: flags.MeasuredRule}
		}
		return out, nil
	}
	fp, ok := s.mod.(caddymodule.FlagProvider)
	if !ok {
		return nil, fmt.Errorf("flags: %T is not a flag source", s.mod)
	}
	provider, err := fp.OpenFeatureProvider()
	if err != nil {
		return nil, err
	}
	r := flags.NewRollout(provider)
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	defer r.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for !r.Ready() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	out := make([]flags.InForce, len(platforms))
	for i, p := range platforms {
		out[i] = r.InForce(ctx, p, guard.RolloutSamples)
		if _, remote := s.mod.(*caddymodule.FlagdRPCFlags); remote && out[i].Ready {
			out[i].Note = "the flagd daemon holds the rule"
		}
	}
	return out, nil
}

func union(a, b []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a), b...))))
}

func rolloutSetCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   `set <percent> [--platform <name>] [--config <Caddyfile>] [--flags "flagd /etc/credgate/flags.json"]`,
		Short: "Sets the share of users on the new flow, on every platform or one, in the flag file",
		Long: `Sets the share of users the oauth-new-flow flag sends to the new flow:
on every branch of its targeting, so that every platform moves, or with
--platform on that platform's alone (a branch of its own is added in
front of the others when it has none, so the other platforms keep
theirs). A flag without targeting gets a fractional split. The kill
switch and the rest of the file stay as they are.

The flag file is --flags "flagd <path>", else --config's. It is replaced
atomically (a temporary file beside it, synced, renamed over it), so a
running credgate, which reads it every 250 ms, sees the old rollout or the
new one, never a part. Prints each platform's percentage before and after.
Refuses, changing nothing, a file that is not valid flagd JSON, a
percentage outside 0–100, and a rule it cannot change without guessing
(it says what it found: change that file by hand).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return interruptible(func(ctx context.Context, cmd *cobra.Command) error {
				return rolloutSet(ctx, cmd, args)
			})(cmd, args)
		},
	}
	// A negative percentage reads as a flag to cobra: say what it is.
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if m := negativeArg.FindStringSubmatch(err.Error()); m != nil {
			err = fmt.Errorf("the percentage must be a number from 0 to 100, got %q", m[1])
		}
		return fail(c, err)
	})
	cmd.Flags().String("platform", "", "set only this platform's percentage")
	cmd.Flags().String("config", "", configFlagHelp)
	cmd.Flags().String("flags", "", `the flag file, "flagd <path>" (overrides --config's)`)
	cmd.Flags().String("database-url", "", "PostgreSQL URL, for the check that the back end reads through credgate (default: $DATABASE_URL)")
	cmd.Flags().Bool("force", false, "raise the percentage even though the app's back end has not read through credgate in the last hour")
	return cmd
}

// negativeArg finds the number in cobra's "unknown shorthand flag: '5'
// in -5".
var negativeArg = regexp.MustCompile(`in (-[0-9][0-9.]*%?)$`)

func rolloutSet(ctx context.Context, cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return errors.New("name the percentage: caddy credgate rollout set <percent> [--platform <name>]")
	}
	percent, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(args[0], "%")), 64)
	if err != nil || percent < 0 || percent > 100 {
		return fmt.Errorf("the percentage must be a number from 0 to 100, got %q", args[0])
	}
	cfg, err := loadRolloutConfig(cmd)
	if err != nil {
		return err
	}
	source, err := rolloutFlagSource(cmd, cfg)
	switch {
	case err != nil:
		return err
	case source == nil:
		return errors.New(`name the flag file: --flags "flagd <path>", or --config with the Caddyfile whose flags are a flagd file`)
	case source.file == nil:
		info := source.mod.CaddyModule()
		return fmt.Errorf("the flag source is %s, not a flag file: %s", info.ID.Name(), map[string]string{
			"flagd_rpc": "the flagd daemon holds the flags; change them where it reads them",
			"static":    "change its percentage in the Caddyfile and reload",
		}[info.ID.Name()])
	}

	platforms := defaultPlatforms()
	if cfg != nil && len(cfg.platforms) > 0 {
		platforms = cfg.platforms
	}
	platforms = union(platforms, source.file.Platforms())
	platform, _ := cmd.Flags().GetString("platform")
	platform = strings.ToLower(strings.TrimSpace(platform))
	reached := platforms
	if platform != "" {
		if !slices.Contains(platforms, platform) {
			return fmt.Errorf("unknown platform %q (known: %s; --config names the Caddyfile's providers)", platform, strings.Join(platforms, ", "))
		}
		reached = []string{platform}
	}

	if err := flags.CheckFlagSet(source.data); err != nil {
		return fmt.Errorf("%s: %w (a running credgate keeps the last good one; fix the file first)", source.path, err)
	}
	before, err := flags.FileInForce(ctx, source.data, platforms)
	if err != nil {
		return fmt.Errorf("%s: %w", source.path, err)
	}
	unchanged := source.file.Marshal()
	if err := source.file.SetNewPercent(percent, platform); err != nil {
		return fmt.Errorf("%s: %w", source.path, err)
	}
	out := source.file.Marshal()
	if err := flags.CheckFlagSet(out); err != nil {
		return fmt.Errorf("%s: the changed file would not load, so it was not written: %w", source.path, err)
	}
	after, err := flags.FileInForce(ctx, out, platforms)
	if err != nil {
		return fmt.Errorf("%s: %w", source.path, err)
	}
	w := cmd.OutOrStdout()
	if bytes.Equal(out, unchanged) {
		fmt.Fprintf(w, "%s: %s already sends %s %% of %s to the new flow; nothing written\n",
			source.path, flags.FlagNewFlow, strconv.FormatFloat(percent, 'f', -1, 64), strings.Join(reached, ", "))
		printSetTable(w, before, after)
		return nil
	}
	if percent > 0 && rolloutSetPreflight != nil {
		if err := rolloutSetPreflight(ctx, cmd, reached, percent); err != nil {
			return err
		}
	}
	if err := flags.WriteFile(source.path, out); err != nil {
		return fmt.Errorf("%w (nothing changed)", err)
	}
	fmt.Fprintf(w, "%s: %s\n", source.path, flags.FlagNewFlow)
	printSetTable(w, before, after)
	fmt.Fprintln(w, "✓ written; a running credgate applies it within 250 ms")
	for _, a := range after {
		if a.Problem == "" && !a.KillSwitchOn {
			fmt.Fprintf(w, "⚠ the kill switch (%s) is off: everyone stays on the legacy flow until it is on (set does not change it)\n", flags.FlagEnabled)
			break
		}
	}
	return nil
}

// printSetTable prints each platform's percentage before and after.
func printSetTable(w io.Writer, before, after []flags.InForce) {
	width := 0
	for _, b := range before {
		width = max(width, len(b.Platform))
	}
	for i, b := range before {
		a := after[i]
		mark := ""
		if shareText(b) == shareText(a) {
			mark = "  (unchanged)"
		}
		fmt.Fprintf(w, "  %-*s  %s → %s%s\n", width, b.Platform, shareText(b), shareText(a), mark)
	}
}

// shareText is a platform's new-flow share for the set table.
func shareText(f flags.InForce) string {
	switch {
	case f.Problem != "":
		return "(" + f.Problem + ")"
	case f.Measured == flags.MeasuredSampled:
		return fmt.Sprintf("%5.1f %% (sampled: %s)", f.NewPercent, f.Note)
	}
	return fmt.Sprintf("%5.1f %%", f.NewPercent)
}

func rolloutResumeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resume --platform <name> [--by <who>] [--config <Caddyfile>]",
		Short: "Clears a rollout guard halt: new starts follow the flags again",
		Long: `Clears the halt the rollout guard latched for a platform, in every
replica within a second, and writes a rollout_resumed audit row naming who
resumed it. The guard judges again on a fresh window that starts now, so
the flows that caused the halt cannot trip it again. Fails when the
platform is not halted, naming a platform that is neither halted nor
known (the four built-in platforms, and --config's providers).`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			platform, _ := cmd.Flags().GetString("platform")
			if platform == "" {
				return errors.New("--platform is required (twitter, linkedin, facebook, instagram …)")
			}
			by, _ := cmd.Flags().GetString("by")
			if by == "" {
				by = os.Getenv("USER")
			}
			by = strings.TrimSpace("command " + by)
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			// A halt in the database is cleared whatever its platform;
			// only with none is the name checked, so a typo is not
			// answered as "not halted".
			h, err := guard.Resume(ctx, pool, platform, by)
			if errors.Is(err, guard.ErrNotHalted) {
				cfg, cfgErr := loadRolloutConfig(cmd)
				if cfgErr != nil {
					return cfgErr
				}
				known := defaultPlatforms()
				if cfg != nil {
					known = union(known, cfg.platforms)
				}
				if !slices.Contains(known, platform) {
					return fmt.Errorf("unknown platform %q, and no halt under that name (known: %s; --config names the Caddyfile's providers)",
						platform, strings.Join(known, ", "))
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "✓ %s resumed (halted since %s: %s)\n", platform, h.At.UTC().Format(time.RFC3339), h.Reason)
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().String("platform", "", "the platform to resume")
	cmd.Flags().String("by", "", "who resumes it, for the audit log (default: $USER)")
	cmd.Flags().String("config", "", "the Caddyfile (or JSON config) credgate runs with: its providers are known platforms too")
	return cmd
}
