package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/spf13/cobra"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/vault"
)

// `caddy credgate rollout status|resume`: the rollout guard from the
// command line. Both work on the database directly, so they need no
// running instance; GET /api/credentials/rollout and POST
// /api/credentials/rollout/resume are the same through a running one.

// defaultPlatforms are the platforms `rollout status` lists besides any
// with outcomes or a halt in the database.
var defaultPlatforms = []string{"facebook", "instagram", "linkedin", "twitter"}

func rolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Shows the rollout per platform and resumes a platform the guard halted",
	}
	cmd.AddCommand(rolloutStatusCommand(), rolloutResumeCommand())
	return cmd
}

func rolloutStatusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   `status [--flags "flagd /etc/credgate/flags.json"] [--window 10m] [--json]`,
		Short: "Prints each platform's percentage in force, kill switch, guard state and windowed success of both arms",
		Long: `Prints, for each platform: the percentage of users the flags send to the
new flow and the kill switch (when --flags names the flag source, written
as in the Caddyfile: "flagd <path>", "flagd_rpc <host:port>" or
"static <percent>"; the percentage is measured on 1,000 sample user ids),
whether the rollout guard has halted it, the success of both arms over
the window, and the window's decisions at the app's connect route by arm
and reason (no_identity: users credgate did not recognise, whom no
percentage moves), all summed over every replica.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			window, _ := cmd.Flags().GetDuration("window")
			if window <= 0 {
				return errors.New("--window must be a positive duration")
			}
			var rollout *flags.Rollout
			if line, _ := cmd.Flags().GetString("flags"); line != "" {
				r, err := startRolloutFrom(ctx, line)
				if err != nil {
					return err
				}
				defer r.Close(context.Background())
				rollout = r
			}
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			status, err := rolloutStatus(ctx, pool, rollout, window, defaultPlatforms)
			if err != nil {
				return err
			}
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"window": window.String(), "platforms": status})
			}
			printRolloutStatus(cmd.OutOrStdout(), status, window)
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().String("flags", "", `the flag source, as in the Caddyfile ("flagd <path>", "flagd_rpc <host:port>", "static <percent>")`)
	cmd.Flags().Duration("window", guard.DefaultWindow, "the success-rate window")
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func printRolloutStatus(w io.Writer, status []RolloutStatus, window time.Duration) {
	for _, s := range status {
		flagsText := "flags not read (pass --flags)"
		switch f := s.Flags; {
		case f == nil:
		case !f.Ready:
			flagsText = "flag source not ready: legacy for everyone"
		case f.Problem != "":
			flagsText = "flags failing (" + f.Problem + "): legacy for everyone"
		case !f.KillSwitchOn:
			flagsText = fmt.Sprintf("kill switch off (legacy for everyone); split %.1f %% new", f.NewPercent)
		default:
			flagsText = fmt.Sprintf("%.1f %% new, kill switch on", f.NewPercent)
		}
		guardText := "running"
		if h := s.Guard.Halt; h != nil {
			guardText = fmt.Sprintf("HALTED since %s: %s (resume: caddy credgate rollout resume --platform %s)",
				h.At.UTC().Format(time.RFC3339), h.Reason, s.Platform)
		}
		fmt.Fprintf(w, "%s\n  flags:  %s\n  guard:  %s\n  last %s: new flow %s, legacy flow %s\n",
			s.Platform, flagsText, guardText, window, rateText(s.Guard.New), rateText(s.Guard.Legacy))
		fmt.Fprintf(w, "  decisions: %s\n", decisionsText(s.Decisions))
		if warning := identityWarning(s.Decisions); warning != "" {
			fmt.Fprintf(w, "  ⚠ %s\n", warning)
		}
	}
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

func rateText(r guard.Rate) string {
	if r.Samples() == 0 {
		return "no flows"
	}
	return fmt.Sprintf("%.1f %% of %d", 100*r.Success(), r.Samples())
}

// startRolloutFrom builds and starts the rollout a Caddyfile flags line
// names, waiting up to 5 s for its source.
func startRolloutFrom(ctx context.Context, line string) (*flags.Rollout, error) {
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
	fp, ok2 := mod.(FlagProvider)
	if !ok || !ok2 {
		return nil, fmt.Errorf("--flags: %s cannot be set up from the command line", d.Val())
	}
	d.Reset()
	if err := unm.UnmarshalCaddyfile(d); err != nil {
		return nil, fmt.Errorf("--flags: %w", err)
	}
	// A mistyped path would read as "no flags": say what it is.
	if f, ok := mod.(*FlagdFileFlags); ok {
		if _, err := os.Stat(f.Path); err != nil {
			return nil, fmt.Errorf("--flags: flag file: %w", err)
		}
	}
	provider, err := fp.OpenFeatureProvider()
	if err != nil {
		return nil, err
	}
	r := flags.NewRollout(provider)
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for !r.Ready() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	return r, nil
}

func rolloutResumeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resume --platform <name> [--by <who>]",
		Short: "Clears a rollout guard halt: new starts follow the flags again",
		Long: `Clears the halt the rollout guard latched for a platform, in every
replica within a second, and writes a rollout_resumed audit row naming who
resumed it. The guard judges again on a fresh window that starts now, so
the flows that caused the halt cannot trip it again. Fails when the
platform is not halted.`,
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
			h, err := guard.Resume(ctx, pool, platform, by)
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
	return cmd
}
