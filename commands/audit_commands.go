package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/credgate/credgate/caddymodule"
	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// The audit log's lifecycle: `audit prune` (retention) and `erase-user`
// (erasure), the two ways rows leave credential_audit_log or lose their
// user id (migration 007).

func auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The audit log's retention: exports and deletes rows older than a cutoff",
	}
	cmd.AddCommand(auditPruneCommand())
	return cmd
}

func auditPruneCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "prune --before <date|duration> --export <file.jsonl|->",
		Short: "Exports the audit rows older than a cutoff as JSON Lines, then deletes them",
		Long: `Exports every credential_audit_log row created before --before, one JSON
object per line (every column, times in UTC), to --export, and deletes
them, in batches of --batch-size rows: each batch is deleted, written out
and synced to disk in one transaction that commits only after the sync,
so a row leaves the table only once it is in the file. The file must not
exist yet; "-" writes to standard output (then the summary goes to
standard error).

--before is a date (2026-01-01, midnight UTC), a time (RFC 3339), or an
age: 90d, 2160h. The daily roll-up (credential_audit_daily, which report's
daily breakdown reads) must hold every day whose rows go: prune first
rolls up every finished day not rolled up yet, and refuses a cutoff that
would take rows of a day not over (a day is rolled up an hour after
midnight UTC). Writes an audit_pruned row. Deleting through the
append-only rule is allowed only here (the trigger's credgate.audit_prune
setting); a plain DELETE stays refused.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			now := time.Now()
			raw, _ := cmd.Flags().GetString("before")
			before, err := parseCutoff(raw, now)
			if err != nil {
				return err
			}
			dest, _ := cmd.Flags().GetString("export")
			if dest == "" {
				return errors.New("--export is required: a new file for the rows (JSON Lines), or - for standard output")
			}
			size, _ := cmd.Flags().GetInt("batch-size")
			if size < 1 || size > 100_000 {
				return errors.New("--batch-size must be from 1 to 100000")
			}
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			rolled, err := worker.RollUpFinished(ctx, pool, now)
			if err != nil {
				return err
			}
			// Refused before the file exists.
			if day, ok, err := vault.FirstDayNotRolledUp(ctx, pool, before); err != nil {
				return err
			} else if ok {
				return vault.ErrNotRolledUp{Day: day}
			}
			out, report := cmd.OutOrStdout(), cmd.OutOrStdout()
			opts := vault.PruneOptions{Before: before, BatchSize: size, Destination: dest}
			if dest == "-" {
				opts.Export, report = out, cmd.ErrOrStderr()
				opts.Destination = "standard output"
			} else {
				f, err := createExport(dest)
				if err != nil {
					return err
				}
				defer f.Close()
				opts.Export, opts.Sync = f, f.Sync
			}
			last := time.Now()
			opts.Progress = func(p vault.PruneResult) {
				if time.Since(last) >= progressInterval {
					last = time.Now()
					fmt.Fprintf(report, "prune: %d rows exported and deleted, %d batches (%s)\n", p.Rows, p.Batches, p.Elapsed.Round(time.Second))
				}
			}
			res, err := vault.PruneAudit(ctx, pool, opts)
			if err != nil {
				return err
			}
			if len(rolled) > 0 {
				fmt.Fprintf(report, "✓ rolled up %d finished days first (%s to %s)\n", len(rolled),
					rolled[0].Format(time.DateOnly), rolled[len(rolled)-1].Format(time.DateOnly))
			}
			fmt.Fprintf(report, "✓ audit prune: %d rows (%d events) created before %s exported to %s and deleted, in %d batches (%s)\n",
				res.Rows, res.Events, before.UTC().Format(time.RFC3339), opts.Destination, res.Batches, res.Elapsed.Round(time.Millisecond))
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().String("before", "", "the cutoff: a date (2026-01-01, UTC), an RFC 3339 time, or an age (90d, 2160h)")
	cmd.Flags().String("export", "", "the new file the rows go to, as JSON Lines; - for standard output")
	cmd.Flags().Int("batch-size", vault.DefaultPruneBatch, "rows per transaction")
	return cmd
}

// parseCutoff reads --before: a date (midnight UTC), an RFC 3339 time,
// or an age before now (Go's durations, and whole days as 90d).
func parseCutoff(raw string, now time.Time) (time.Time, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return time.Time{}, errors.New("--before is required: a date (2026-01-01), an RFC 3339 time, or an age such as 90d")
	}
	var t time.Time
	if d, err := time.Parse(time.DateOnly, raw); err == nil {
		t = d
	} else if d, err := time.Parse(time.RFC3339Nano, raw); err == nil {
		t = d
	} else if days, ok := strings.CutSuffix(raw, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 {
			return time.Time{}, fmt.Errorf("--before %q: an age in days is a whole number of days, such as 90d", raw)
		}
		t = now.AddDate(0, 0, -n)
	} else if age, err := time.ParseDuration(raw); err == nil && age > 0 {
		t = now.Add(-age)
	} else {
		return time.Time{}, fmt.Errorf("--before %q is not a date (2026-01-01), an RFC 3339 time or an age (90d, 2160h)", raw)
	}
	if !t.Before(now) {
		return time.Time{}, fmt.Errorf("--before %s is not in the past", t.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// createExport creates the export file, refusing one that exists (an
// earlier export is never overwritten), and syncs its directory so that
// the file itself survives a crash along with what is synced into it.
func createExport(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("--export %s already exists: name a new file (an export is never overwritten)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("--export: %w", err)
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		err = dir.Sync()
		dir.Close()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("--export: syncing %s: %w", filepath.Dir(path), err)
		}
	}
	return f, nil
}

func eraseUserCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "erase-user <user uuid> [--revoke --config <Caddyfile>]",
		Short: "Erases a user: deletes their accounts and strips their id from the audit log, keeping the counts",
		Long: `Erases one user from credgate's tables: deletes their social_accounts
rows (the app's table: every platform, with their refresh jobs and
renewal leases) and OAuth states in one transaction, then clears user_id
(and details.account_id) in every audit row of theirs, in batches. The
rows stay, with their counts, so report and the daily roll-up do not
change. Clearing the id goes through the append-only rule's one door for
it (the trigger's credgate.audit_erase setting). Writes a user_erased
audit row that names no user.

--revoke first revokes each account's token at its platform where the
platform allows it (X, Facebook, a generic provider with a revoke_url;
not LinkedIn or Instagram), with the providers of --config (the Caddyfile
or JSON config credgate runs with) and ENCRYPTION_MASTER_KEY (and
ENCRYPTION_PREVIOUS_KEYS) to read the tokens. A revocation the platform
refuses for another reason than a dead token stops the erasure before
anything is deleted: run it again. Running it again is safe in any case:
it finishes what a failed run left.`,
		Args: cobra.ExactArgs(1),
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			id, err := uuid.Parse(cmd.Flags().Arg(0))
			if err != nil {
				return fmt.Errorf("%q is not a user id (a UUID)", cmd.Flags().Arg(0))
			}
			user := id.String()
			revoke, _ := cmd.Flags().GetBool("revoke")
			path, _ := cmd.Flags().GetString("config")
			var providers map[string]*oauth.Provider
			url := databaseURL(cmd)
			if revoke {
				if path == "" {
					return errors.New("--revoke needs --config, the Caddyfile (or JSON config) credgate runs with: its providers revoke the tokens")
				}
				var configURL string
				if providers, configURL, err = configProviders(path); err != nil {
					return err
				}
				if url == "" {
					url = configURL
				}
			}
			if url == "" {
				return errors.New("no database URL: set DATABASE_URL or pass --database-url")
			}
			// openAccounts reads the flag: it takes --config's URL too.
			cmd.Flags().Set("database-url", url)
			var accounts *vault.Accounts
			var pool *pgxpool.Pool
			if revoke {
				accounts, _, pool, err = openAccounts(ctx, cmd)
			} else {
				// No token is read: no key is needed.
				accounts, pool, err = openAccountsWithoutKeys(ctx, url)
			}
			if err != nil {
				return err
			}
			defer pool.Close()
			erased, revocations, err := worker.EraseUser(ctx, pool, accounts, providers, user, revoke)
			w := cmd.OutOrStdout()
			for _, r := range revocations {
				fmt.Fprintf(w, "✓ %s: %s\n", r.Platform, revocationText(r.Outcome))
			}
			if err != nil {
				return err
			}
			platforms := make([]string, len(erased.Accounts))
			for i, a := range erased.Accounts {
				platforms[i] = a.Platform
			}
			slices.Sort(platforms)
			list := ""
			if len(platforms) > 0 {
				list = " (" + strings.Join(platforms, ", ") + ")"
			}
			fmt.Fprintf(w, "✓ erase-user: deleted %d accounts%s and %d OAuth states; cleared the user id from %d audit rows, which keep their counts\n",
				len(erased.Accounts), list, erased.States, erased.AuditRows)
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL, else --config's database_url)")
	cmd.Flags().Bool("revoke", false, "first revoke each account's token at its platform, where the platform allows it (needs --config)")
	cmd.Flags().String("config", "", "the Caddyfile (or JSON config) credgate runs with: its providers revoke the tokens")
	return cmd
}

// revocationText says what happened to one account's token.
func revocationText(outcome string) string {
	switch outcome {
	case worker.RevokeDone:
		return "token revoked at the platform"
	case worker.RevokeAlreadyInvalid:
		return "the platform says the token is no longer valid"
	case worker.RevokeUnsupported:
		return "the platform has no revocation; the token stays valid until it expires or the user removes the app"
	case worker.RevokeNoProvider:
		return "not revoked: --config has no provider for it"
	case worker.RevokeNoToken:
		return "no token to revoke"
	case worker.RevokeUndecryptable:
		return "not revoked: its credentials do not open with the configured keys"
	}
	return outcome
}

// openAccountsWithoutKeys is the account store for statements that read
// no token (the settings only).
func openAccountsWithoutKeys(ctx context.Context, url string) (*vault.Accounts, *pgxpool.Pool, error) {
	pool, err := vault.OpenPool(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	settings, err := vault.LoadSettings(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	accounts := vault.NewAccounts(nil)
	accounts.UseSettings(vault.Fixed(settings))
	return accounts, pool, nil
}

// configProviders builds the providers of the config at path as the
// running app does (placeholders such as {env.TWITTER_CLIENT_SECRET}
// filled in), and returns its database_url.
func configProviders(path string) (map[string]*oauth.Provider, string, error) {
	raw, err := credgateAppJSON(path)
	if err != nil {
		return nil, "", err
	}
	providers, databaseURL, err := caddymodule.AppProviders(raw)
	if err != nil {
		return nil, "", fmt.Errorf("--config %s: %w", path, err)
	}
	return providers, databaseURL, nil
}
