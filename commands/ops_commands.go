package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// The day-to-day operator commands: cleanup, report and verify (the
// guide's maintenance tasks and post-migration verification).

func cleanupCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Deletes expired OAuth states now and prints how many",
		Long: `Deletes expired OAuth states (guide Step 5.2) and refresh jobs finished
more than a week ago, and prints the counts. The credgate app does the
same every cleanup_interval; this is for doing it now. Safe to run next
to running credgate instances: it waits for a cleanup in progress, so no
row is counted twice.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			res, err := worker.Cleanup(ctx, pool, time.Now(), "command", true)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "✓ deleted %d expired OAuth states, pruned %d finished refresh jobs\n", res.States, res.Jobs)
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	return cmd
}

func reportCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report [--since 24h] [--days 7] [--json]",
		Short: "Prints the guide's audit queries: events, failures, success rates, daily counts",
		Long: `Prints the migration guide's monitoring queries over the audit log:
events by action and status, recent failures, the connection success rate
and average connection time by platform and flow, the token refresh
success rate by platform (Step 4.4, Step 5.1), and a daily breakdown from
the audit roll-up (the weekly check). --json prints the same as one JSON
object.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			since, _ := cmd.Flags().GetDuration("since")
			days, _ := cmd.Flags().GetInt("days")
			if since <= 0 || days < 1 || days > 366 {
				return errors.New("--since must be a positive duration and --days a number from 1 to 366")
			}
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			rep, err := report.Build(ctx, pool, time.Now(), since, days)
			if err != nil {
				return err
			}
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(cmd.OutOrStdout(), rep)
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().Duration("since", 24*time.Hour, "how far back to read")
	cmd.Flags().Int("days", 7, "days in the daily breakdown")
	cmd.Flags().Bool("json", false, "print JSON instead of tables")
	return cmd
}

func printReport(w io.Writer, r report.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	section := func(title string) { fmt.Fprintf(tw, "\n%s\n", title) }
	fmt.Fprintf(tw, "credgate report, %s → %s\n", r.From.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339))
	section("Events by action and status")
	fmt.Fprintln(tw, "ACTION\tSTATUS\tCOUNT")
	for _, e := range r.Events {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", e.Action, e.Status, e.Count)
	}
	section("Connection success rate")
	fmt.Fprintln(tw, "(successes / (successes + failures); users who declined at the consent screen apart)")
	fmt.Fprintln(tw, "PLATFORM\tFLOW\tSUCCESS\tFAILED\tRATE\tDECLINED\tAVG TIME")
	for _, x := range r.Connections {
		avg := "-"
		if x.AvgMillis != nil {
			avg = (time.Duration(*x.AvgMillis) * time.Millisecond).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f%%\t%d\t%s\n", x.Platform, x.Flow, x.Success, x.Failed, x.Rate*100, x.Declined, avg)
	}
	section("Token refresh success rate")
	fmt.Fprintln(tw, "PLATFORM\tSUCCESS\tFAILED\tRATE")
	for _, x := range r.Refreshes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\n", x.Platform, x.Success, x.Failed, x.Rate*100)
	}
	section("Recent failures")
	fmt.Fprintln(tw, "AT\tACTION\tPLATFORM\tFLOW\tERROR\tUSER")
	for _, f := range r.Failures {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.At.UTC().Format(time.RFC3339), f.Action, f.Platform, f.Flow, f.ErrorCode, f.UserID)
	}
	section("Daily (from the roll-up; * = today, counted live)")
	fmt.Fprintln(tw, "DAY\tACTION\tSTATUS\tEVENTS")
	for _, d := range r.Daily {
		mark := ""
		if d.Partial {
			mark = " *"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%d\n", d.Day, mark, d.Action, d.Status, d.Events)
	}
	tw.Flush()
}

func verifyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify [--min-success-rate 0.95] [--min-samples 50] [--max-gap 0.05] [--since 24h] [--platforms twitter,linkedin,…]",
		Short: "Runs the guide's post-migration verification and exits 1 if any check fails",
		Long: `Checks, as a ✓/✗ list: the schema and row level security, encryption
coverage (every connected account has a blob; no plaintext left), that
every blob's key is in the keyring, that the audit log has recent events,
the connection success rate of every platform (--platforms), new flow and
legacy flow apart and the gap between them (--max-gap), and the token
refresh success rate of each platform that had renewals, against
--min-success-rate, and that no account's refresh is dead or overdue.
A success rate is successes / (successes + failures): users who declined
at the consent screen are shown apart. A platform with fewer than
--min-samples attempts in the window is not judged: ⚠, never ✓.
Reads DATABASE_URL, ENCRYPTION_MASTER_KEY, ENCRYPTION_MASTER_KEY_ID and
ENCRYPTION_PREVIOUS_KEYS. Exits 1 when any check fails.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			rate, _ := cmd.Flags().GetFloat64("min-success-rate")
			since, _ := cmd.Flags().GetDuration("since")
			samples, _ := cmd.Flags().GetInt64("min-samples")
			gap, _ := cmd.Flags().GetFloat64("max-gap")
			platforms, _ := cmd.Flags().GetStringSlice("platforms")
			if rate <= 0 || rate > 1 || since <= 0 || samples < 1 || gap <= 0 || gap > 1 {
				return errors.New("--min-success-rate and --max-gap must be in (0, 1], --since a positive duration and --min-samples at least 1")
			}
			// verify reports missing keys as a failed check of its own.
			keys, pool, err := openVault(ctx, cmd, vault.VerifyOptions{AllowMissingKeys: true})
			if err != nil {
				return err
			}
			defer pool.Close()
			checks, err := report.Verify(ctx, pool, databaseURL(cmd), keys, time.Now(), report.VerifyOptions{
				MinSuccessRate: rate, Window: since, MinSamples: samples, Platforms: platforms, MaxGap: gap})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			failed, tooFew := 0, 0
			for _, c := range checks {
				mark := "✓"
				switch {
				case c.TooFew:
					mark, tooFew = "⚠", tooFew+1
				case !c.OK:
					mark, failed = "✗", failed+1
				}
				fmt.Fprintf(w, "%s %s: %s\n", mark, c.Name, c.Detail)
			}
			if failed > 0 {
				return fmt.Errorf("verify: %d of %d checks failed", failed, len(checks))
			}
			if tooFew > 0 {
				fmt.Fprintf(w, "%d checks passed; %d not judged: too few attempts (--min-samples %d).\n", len(checks)-tooFew, tooFew, samples)
				return nil
			}
			fmt.Fprintf(w, "All %d checks passed.\n", len(checks))
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().Float64("min-success-rate", 0.95, "lowest acceptable success rate per platform")
	cmd.Flags().Duration("since", 24*time.Hour, "window for success rates and audit activity")
	cmd.Flags().Int64("min-samples", guard.DefaultMinSamples, "attempts a platform needs in the window before its success rate is judged")
	cmd.Flags().Float64("max-gap", guard.DefaultMaxGap, "how far the new flow's success rate may fall below the legacy flow's")
	cmd.Flags().StringSlice("platforms", oauth.Platforms, "platforms whose connection success rate is judged, traffic or not")
	return cmd
}

// plainError is how every credgate command reports failure: one line on
// stderr, no JSON log envelope, no usage dump, no stack trace.
func plainError(w io.Writer, msg string) {
	fmt.Fprintln(w, "Error: "+strings.Join(strings.Fields(msg), " "))
}
