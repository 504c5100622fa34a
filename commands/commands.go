// Package commands is `caddy credgate …`, the operator's commands: keys,
// the schema, rotation and backfill, cleanup, reports and verification,
// the rollout and its guard, the app's table, audit retention and
// erasure, the sandbox and development tokens. Each is a thin layer over
// the core packages (vault, migrations, report, guard, flags, worker) that
// parses flags and prints; it reads a config's credgate app the way Caddy
// would run it (caddymodule's modules, through Caddy's registry and
// caddymodule.AppProviders). Importing the package registers the command.
package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/migrations"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/vault"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "credgate",
		Usage: "<command> [flags]",
		Short: "Manages credgate: keys, schema, rotation, backfill, cleanup, reports, verification, the rollout guard, audit retention and erasure",
		Long: `
Operator commands for credgate. Each reads DATABASE_URL and
ENCRYPTION_MASTER_KEY from the environment unless a flag says otherwise,
prints a one-line error and exits 1 on bad input.`,
		CobraFunc: func(cmd *cobra.Command) {
			for _, sub := range Commands() {
				cmd.AddCommand(sub)
			}
		},
	})
}

// Commands builds the subcommand tree of `caddy credgate`; tests execute
// it directly.
func Commands() []*cobra.Command {
	keygen := &cobra.Command{
		Use:   "keygen",
		Short: "Prints a new master key for ENCRYPTION_MASTER_KEY",
		Long: `Prints a new master key: standard base64 of 32 random bytes.
Store it in your secret manager as ENCRYPTION_MASTER_KEY.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), vault.NewMasterKey())
			return err
		},
	}

	migrate := &cobra.Command{
		Use:   "migrate",
		Short: "Applies, reverts or reports the credgate database schema",
		Long: `Manages credgate's schema (migration 001_improve_credentials).

  up      create credgate's tables and columns; safe to run twice or from
          several processes at once
  status  print the applied version and which tables and columns exist
  down    the rollback plan: drop what up added, never the app's
          social_accounts table or its legacy rows`,
	}
	migrate.PersistentFlags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")

	up := &cobra.Command{
		Use:   "up",
		Short: "Creates credgate's tables and columns",
		Args:  cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			rep, err := migrations.Up(ctx, databaseURL(cmd))
			if err == nil {
				printUp(cmd.OutOrStdout(), rep)
			}
			return err
		}),
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Drops what up added; keeps social_accounts and its legacy rows",
		Args:  cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			force, _ := cmd.Flags().GetBool("force")
			rep, err := migrations.Down(ctx, databaseURL(cmd), migrations.DownOptions{Force: force})
			if err == nil {
				printDown(cmd.OutOrStdout(), rep)
			}
			return err
		}),
	}
	down.Flags().Bool("force", false, "roll back even if accounts connected through credgate would lose their tokens")
	status := &cobra.Command{
		Use:   "status",
		Short: "Prints the applied version and which tables and columns exist",
		Args:  cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			s, err := migrations.Inspect(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			if !printStatus(cmd.OutOrStdout(), s) {
				if len(s.AppTable.Errors()) > 0 && !s.Dirty {
					return errors.New("the schema is incomplete: social_accounts lacks what credgate's statements need (see above)")
				}
				return errors.New("the schema is incomplete: run `caddy credgate migrate up`")
			}
			return nil
		}),
	}
	migrate.AddCommand(up, down, status)
	return []*cobra.Command{keygen, migrate, rotateCommand(), backfillCommand(), cleanupCommand(), reportCommand(),
		verifyCommand(), rolloutCommand(), sandboxCommand(), devtokenCommand(),
		writebackCommand(), transitionCommand(), appRefreshCommand(), appExpiryColumnCommand(), appPlatformNameCommand(),
		auditCommand(), eraseUserCommand()}
}

// progressInterval is how often a long batch job prints where it is.
const progressInterval = 2 * time.Second

func rotateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Re-encrypts every credential under the primary key (key rotation)",
		Long: `Rewraps, in batches, every credential blob sealed with a key other than
ENCRYPTION_MASTER_KEY (ENCRYPTION_MASTER_KEY_ID): the online half of a
monthly key rotation. Deploy the new key as primary with the old one in
ENCRYPTION_PREVIOUS_KEYS first. Safe to run from several processes at once;
a stopped run resumes where it stopped. Exits 1 if any row is left on an
old key.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			// The store with the app's platform names: the blobs are bound
			// to the providers'.
			accounts, keys, pool, err := openAccounts(ctx, cmd)
			if err != nil {
				return err
			}
			defer pool.Close()
			size, _ := cmd.Flags().GetInt("batch-size")
			w := cmd.OutOrStdout()
			p, err := withProgress(w, "rewrap", progressInterval, func(report func(vault.Progress)) (vault.Progress, error) {
				return accounts.Rewrap(ctx, pool, vault.BatchOptions{BatchSize: size, Progress: report, Worker: hostname()})
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "✓ rewrap: %d rows re-encrypted under key %d, %d failed, %d left on old keys (%s)\n",
				p.Done, keys.PrimaryID(), p.Failed, p.Remaining, p.Elapsed.Round(time.Millisecond))
			if p.Failed > 0 || p.Remaining > 0 {
				return fail(cmd, fmt.Errorf("%d rows are still on an old key (%d failed to decrypt: see action 'decrypt_failed' in credential_audit_log); keep the old key in %s",
					p.Remaining, p.Failed, vault.EnvPreviousKeys))
			}
			fmt.Fprintf(w, "✓ no blob uses an old key any more: it can be removed from %s\n", vault.EnvPreviousKeys)
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().Int("batch-size", vault.DefaultBatchSize, "rows per transaction")
	return cmd
}

func backfillCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backfill [--dry-run] [--purge-plaintext]",
		Short: "Encrypts legacy plaintext tokens into credentials_encrypted",
		Long: `Encrypts the legacy access_token/refresh_token of every account into
credentials_encrypted, in batches, leaving the plaintext in place for the
unchanged app (with the app's expiry, when app-expiry-column names its
column). It writes only credgate's columns. Rows whose blob already
matches are skipped; rows the app changed since are sealed again, and so
are rows credgate connected that the app wrote a newer token into (a
reconnect through the legacy flow after a rollback): the newest token
wins. Every batch is audited. Backfilled rows stay the app's: credgate
does not renew them until 'caddy credgate app-refresh off'.

--dry-run only counts. --purge-plaintext then clears the plaintext columns,
only on rows whose blob was just read back and found equal; do it only once
the app no longer reads those columns (guide Phase 5). Exits 1 if any row
could not be processed.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			accounts, _, pool, err := openAccounts(ctx, cmd)
			if err != nil {
				return err
			}
			defer pool.Close()
			w := cmd.OutOrStdout()
			if dry, _ := cmd.Flags().GetBool("dry-run"); dry {
				plan, err := accounts.PlanBackfill(ctx, pool)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "dry run: %d rows would be encrypted, %d rows with a blob would be verified; nothing was changed\n",
					plan.ToEncrypt, plan.ToVerify)
				return nil
			}
			size, _ := cmd.Flags().GetInt("batch-size")
			opt := vault.BatchOptions{BatchSize: size, Worker: hostname()}
			p, err := withProgress(w, "backfill", progressInterval, func(report func(vault.Progress)) (vault.Progress, error) {
				opt.Progress = report
				return accounts.Backfill(ctx, pool, opt)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "✓ backfill: %d rows encrypted, %d already matched, %d failed (%s)\n",
				p.Done, p.Skipped, p.Failed, p.Elapsed.Round(time.Millisecond))
			failed := p.Failed
			if purge, _ := cmd.Flags().GetBool("purge-plaintext"); purge {
				p, err := withProgress(w, "purge", progressInterval, func(report func(vault.Progress)) (vault.Progress, error) {
					opt.Progress = report
					return accounts.PurgePlaintext(ctx, pool, opt)
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "✓ purge: plaintext cleared on %d rows, %d kept because their blob did not open, %d kept because the app wrote a newer token than credgate's (%s)\n",
					p.Done, p.Failed, p.Newer, p.Elapsed.Round(time.Millisecond))
				failed += p.Failed
				if p.Newer > 0 {
					return fmt.Errorf("%d rows hold a token the app wrote after credgate's last write (a reconnect through the legacy flow): they keep it; run `caddy credgate backfill` to take those tokens, then purge again", p.Newer)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d rows could not be processed; see failed backfill/purge_plaintext rows in credential_audit_log", failed)
			}
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().Int("batch-size", vault.DefaultBatchSize, "rows per transaction")
	cmd.Flags().Bool("dry-run", false, "only count what would be done")
	cmd.Flags().Bool("purge-plaintext", false, "after backfilling, clear plaintext on rows whose blob reads back equal")
	return cmd
}

// openVault builds the keyring from the environment, connects, and checks
// the keys against the fingerprints recorded in the database.
func openVault(ctx context.Context, cmd *cobra.Command, opts vault.VerifyOptions) (*vault.Keyring, *pgxpool.Pool, error) {
	keys, err := vault.KeyringFromEnv()
	if err != nil {
		return nil, nil, err
	}
	pool, err := vault.OpenPool(ctx, databaseURL(cmd))
	if err != nil {
		return nil, nil, err
	}
	if _, err := keys.VerifyFingerprints(ctx, pool, opts); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return keys, pool, nil
}

// withProgress runs a batch job and prints its latest progress every
// interval while it runs, so an operator (or a log) sees it move.
func withProgress(w io.Writer, label string, interval time.Duration, run func(report func(vault.Progress)) (vault.Progress, error)) (vault.Progress, error) {
	var mu sync.Mutex
	var latest vault.Progress
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				mu.Lock()
				p := latest
				mu.Unlock()
				fmt.Fprintf(w, "%s: %d done, %d remaining, %d failed, %d batches (%s)\n",
					label, p.Done, p.Remaining, p.Failed, p.Batches, p.Elapsed.Round(time.Second))
			}
		}
	})
	p, err := run(func(p vault.Progress) {
		mu.Lock()
		latest = p
		mu.Unlock()
	})
	close(done)
	wg.Wait()
	return p, err
}

func sandboxCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox [--listen 127.0.0.1:9090] [--config sandbox.json] [--app-origin URL] [--auto-approve]",
		Short: "Runs the provider emulator for Twitter/X, LinkedIn, Facebook and Instagram",
		Long: `Serves the four platforms' OAuth endpoints on their real paths under
http://<listen>/<platform>/…, enforcing each platform's quirks, for staging
checks and the demo. Prints the client ids and secrets it accepts.

--config reads a JSON file: {"apps": [...], "auto_approve": true,
"faults": {"twitter.token": {"error_rate": 0.2, "latency": "300ms"}},
"access_ttl": {"twitter": "2m"}} (access_ttl: how long Twitter's or
LinkedIn's access tokens live, to see renewals without waiting hours).
Faults can also be changed while it runs: PUT /_sandbox/faults/<key>.
Counters: GET /_sandbox/stats.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var cfg sandbox.Config
			if path, _ := cmd.Flags().GetString("config"); path != "" {
				raw, err := os.ReadFile(path)
				if err != nil {
					return fail(cmd, fmt.Errorf("reading sandbox config: %w", err))
				}
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&cfg); err != nil {
					return fail(cmd, fmt.Errorf("sandbox config %s: %w", path, err))
				}
			}
			if err := cfg.Check(); err != nil {
				return fail(cmd, fmt.Errorf("sandbox config: %w", err))
			}
			if auto, _ := cmd.Flags().GetBool("auto-approve"); auto {
				cfg.AutoApprove = true
			}
			if len(cfg.Apps) == 0 {
				origin, _ := cmd.Flags().GetString("app-origin")
				cfg.Apps = sandbox.DefaultApps(origin)
			}
			listen, _ := cmd.Flags().GetString("listen")
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fail(cmd, fmt.Errorf("listening on %s: %w", listen, err))
			}
			srv := sandbox.New(cfg)
			w := cmd.OutOrStdout()
			base := "http://" + ln.Addr().String()
			fmt.Fprintf(w, "credgate sandbox listening on %s\n", base)
			for _, a := range srv.Apps() {
				fmt.Fprintf(w, "  %-9s client_id=%s client_secret=%s redirect_uris=%s\n", a.Platform, a.ClientID, a.ClientSecret, strings.Join(a.RedirectURIs, ","))
			}
			fmt.Fprintf(w, "  stats: %s/_sandbox/stats\n", base)
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				hs.Shutdown(shutdown)
			}()
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fail(cmd, err)
			}
			return nil
		},
	}
	cmd.Flags().String("listen", "127.0.0.1:9090", "address to listen on")
	cmd.Flags().String("config", "", "JSON file with apps, auto_approve and faults")
	cmd.Flags().String("app-origin", "http://localhost:8080", "origin of the app whose callbacks the default apps register")
	cmd.Flags().Bool("auto-approve", false, "approve every authorization without showing the consent page")
	return cmd
}

func devtokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "devtoken --user <uuid> --secret <secret> [--issuer <iss>] [--ttl 1h]",
		Short: "Prints an HS256 JWT for a user, for local development only",
		Long: `Prints a JWT signed with --secret (HS256, claim sub = --user), to try
credgate's routes with curl against a handler whose identity uses the same
jwt_secret (with a supabase identity block, pass --issuer
<project_url>/auth/v1). For development and staging only: never use a production
secret here. The secret must be given explicitly; it is never read from
the environment.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			user, _ := cmd.Flags().GetString("user")
			devSecret, _ := cmd.Flags().GetString("secret")
			ttl, _ := cmd.Flags().GetDuration("ttl")
			if devSecret == "" {
				return fail(cmd, errors.New("devtoken needs an explicit --secret (the handler's identity jwt_secret)"))
			}
			if ttl <= 0 || ttl > 24*time.Hour {
				return fail(cmd, errors.New("--ttl must be between 1s and 24h"))
			}
			issuer, _ := cmd.Flags().GetString("issuer")
			tok, err := identity.SignDevToken(user, devSecret, issuer, ttl)
			if err != nil {
				return fail(cmd, err)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	cmd.Flags().String("user", "", "the user id (a UUID) to put in the sub claim")
	cmd.Flags().String("secret", "", "the HS256 secret, the same as the handler's identity jwt_secret")
	cmd.Flags().String("issuer", "", "the iss claim: <project_url>/auth/v1 for a handler whose identity is a supabase block")
	cmd.Flags().Duration("ttl", time.Hour, "how long the token is valid")
	return cmd
}

func hostname() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", h, os.Getpid())
}

// interruptible runs a command with a context that Ctrl-C cancels, and
// reports its error the way every credgate command does (see fail).
func interruptible(run func(ctx context.Context, cmd *cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := run(ctx, cmd); err != nil {
			return fail(cmd, err)
		}
		return nil
	}
}

// databaseURL prefers the flag and falls back to DATABASE_URL.
func databaseURL(cmd *cobra.Command) string {
	if u, _ := cmd.Flags().GetString("database-url"); u != "" {
		return u
	}
	return os.Getenv("DATABASE_URL")
}

// fail reports err as one plain line on stderr and exits 1, with no
// usage dump and no stack trace.
func fail(cmd *cobra.Command, err error) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	plainError(cmd.ErrOrStderr(), msg)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	return errors.New(msg)
}

func printUp(w io.Writer, rep migrations.Report) {
	// Warnings the preflight went ahead with: credgate works, not for
	// every row.
	for _, p := range rep.Before.AppTable.Warnings() {
		fmt.Fprintf(w, "! social_accounts: %s\n    fix: %s\n", p.What, p.Fix)
	}
	if !rep.Changed() {
		fmt.Fprintf(w, "✓ Already up to date (version %d)\n", rep.After.Version)
		return
	}
	if f := rep.Before.Failure; f != nil {
		fmt.Fprintf(w, "✓ Ran again from %s, where the last run had failed\n", f.File)
	} else if rep.Before.Dirty {
		fmt.Fprintln(w, "✓ Finished the run that had stopped part-way")
	}
	if !rep.Before.SocialAccounts && rep.After.SocialAccounts {
		fmt.Fprintln(w, "✓ Created table: social_accounts (none existed)")
	}
	for _, t := range rep.Created() {
		fmt.Fprintf(w, "✓ Created table: %s\n", t)
	}
	if cols := rep.AddedColumns(); len(cols) > 0 {
		fmt.Fprintf(w, "✓ Added columns to social_accounts: %s\n", strings.Join(cols, ", "))
	}
	if cols := rep.AddedAuditColumns(); len(cols) > 0 {
		fmt.Fprintf(w, "✓ Added columns to credential_audit_log: %s\n", strings.Join(cols, ", "))
	}
	if tables := rep.RLSEnabled(); len(tables) > 0 {
		fmt.Fprintf(w, "✓ Enabled RLS policies: %s\n", strings.Join(tables, ", "))
	}
	fmt.Fprintf(w, "✓ Schema at version %d\n", rep.After.Version)
}

func printDown(w io.Writer, rep migrations.Report) {
	if !rep.Changed() {
		fmt.Fprintln(w, "✓ Nothing to roll back (no credgate migration applied)")
		return
	}
	if rep.Before.Dirty {
		fmt.Fprintln(w, "✓ Ran every down file again: the last run had stopped part-way")
	}
	for _, t := range rep.Dropped() {
		fmt.Fprintf(w, "✓ Dropped table: %s\n", t)
	}
	if cols := rep.RemovedColumns(); len(cols) > 0 {
		fmt.Fprintf(w, "✓ Removed columns from social_accounts: %s\n", strings.Join(cols, ", "))
	}
	fmt.Fprintln(w, "✓ Kept social_accounts with its legacy columns and rows")
	fmt.Fprintf(w, "✓ Schema at version %d\n", rep.After.Version)
}

// printStatus prints the schema report and reports whether it is
// complete. A dirty schema says what happened and the next step first:
// the version number alone would claim a file that was never applied.
func printStatus(w io.Writer, s migrations.Schema) bool {
	applied, known := s.Applied()
	switch {
	case !known:
		fmt.Fprintln(w, "Applied version: unknown (dirty, see below)")
	case applied == 0 && s.Dirty:
		fmt.Fprintln(w, "Applied version: none (dirty: the last run failed, see below)")
	case applied == 0:
		fmt.Fprintln(w, "Applied version: none")
	case s.Dirty:
		fmt.Fprintf(w, "Applied version: %d (dirty: the last run failed, see below)\n", applied)
	default:
		fmt.Fprintf(w, "Applied version: %d (clean)\n", applied)
	}
	if happened, next := s.Dirtiness(); s.Dirty {
		fmt.Fprintf(w, "Last run: %s\nNext: %s.\n", happened, next)
	}
	mark := func(ok bool) string {
		if ok {
			return "✓"
		}
		return "✗"
	}
	complete := s.SocialAccounts
	fmt.Fprintln(w, "Tables:")
	fmt.Fprintf(w, "  %s social_accounts\n", mark(s.SocialAccounts))
	for _, p := range s.Tables {
		fmt.Fprintf(w, "  %s %s\n", mark(p.Present), p.Name)
		complete = complete && p.Present
	}
	fmt.Fprintln(w, "Columns on social_accounts:")
	for _, p := range s.Columns {
		fmt.Fprintf(w, "  %s %s\n", mark(p.Present), p.Name)
		complete = complete && p.Present
	}
	fmt.Fprintln(w, "Columns on credential_audit_log:")
	for _, p := range s.AuditColumns {
		fmt.Fprintf(w, "  %s %s\n", mark(p.Present), p.Name)
		complete = complete && p.Present
	}
	fmt.Fprintln(w, "Row level security:")
	for _, p := range s.RLS {
		fmt.Fprintf(w, "  %s %s\n", mark(p.Present), p.Name)
		complete = complete && p.Present
	}
	// The preflight: what credgate's statements need of the app's table,
	// which up cannot add.
	errs := s.AppTable.Errors()
	fmt.Fprintln(w, "The app's social_accounts (what credgate's statements need):")
	switch {
	case !s.SocialAccounts:
		fmt.Fprintln(w, "  ✓ none yet: up creates it")
	case len(errs) == 0:
		fmt.Fprintln(w, "  ✓ columns, types, uuid key and unique (user_id, platform) in place")
	}
	for _, p := range errs {
		fmt.Fprintf(w, "  ✗ %s\n      fix: %s\n", p.What, p.Fix)
	}
	for _, p := range s.AppTable.Warnings() {
		fmt.Fprintf(w, "  ! %s\n      fix: %s\n", p.What, p.Fix)
	}
	switch {
	case complete && !s.Dirty && len(errs) == 0:
		fmt.Fprintln(w, "Schema complete.")
		return true
	case s.Dirty:
		fmt.Fprintln(w, "Schema incomplete: see Next above.")
	case len(errs) == 1:
		fmt.Fprintln(w, "Schema incomplete: social_accounts lacks what credgate's statements need (1 problem above); fix the table, then run `caddy credgate migrate up`.")
	case len(errs) > 1:
		fmt.Fprintf(w, "Schema incomplete: social_accounts lacks what credgate's statements need (%d problems above); fix the table, then run `caddy credgate migrate up`.\n", len(errs))
	default:
		fmt.Fprintln(w, "Schema incomplete: run `caddy credgate migrate up`.")
	}
	return false
}
