package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/credgate/credgate/migrations"
	"github.com/credgate/credgate/vault"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "credgate",
		Usage: "<command> [flags]",
		Short: "Manages credgate: master keys and the database schema",
		Long: `
Operator commands for credgate. Each reads DATABASE_URL and
ENCRYPTION_MASTER_KEY from the environment unless a flag says otherwise,
prints a one-line error and exits 1 on bad input.`,
		CobraFunc: func(cmd *cobra.Command) {
			for _, sub := range credgateCommands() {
				cmd.AddCommand(sub)
			}
		},
	})
}

// credgateCommands builds the subcommand tree; tests execute it directly.
func credgateCommands() []*cobra.Command {
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			rep, err := migrations.Up(ctx, databaseURL(cmd))
			if err != nil {
				return fail(cmd, err)
			}
			printUp(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Drops what up added; keeps social_accounts and its legacy rows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			force, _ := cmd.Flags().GetBool("force")
			rep, err := migrations.Down(ctx, databaseURL(cmd), migrations.DownOptions{Force: force})
			if err != nil {
				return fail(cmd, err)
			}
			printDown(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	down.Flags().Bool("force", false, "roll back even if accounts connected through credgate would lose their tokens")
	status := &cobra.Command{
		Use:   "status",
		Short: "Prints the applied version and which tables and columns exist",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			s, err := migrations.Inspect(ctx, databaseURL(cmd))
			if err != nil {
				return fail(cmd, err)
			}
			printStatus(cmd.OutOrStdout(), s)
			return nil
		},
	}
	migrate.AddCommand(up, down, status)
	return []*cobra.Command{keygen, migrate}
}

// databaseURL prefers the flag and falls back to DATABASE_URL.
func databaseURL(cmd *cobra.Command) string {
	if u, _ := cmd.Flags().GetString("database-url"); u != "" {
		return u
	}
	return os.Getenv("DATABASE_URL")
}

// fail reports err the way Caddy's own commands do: one log line, exit 1,
// no usage dump and no stack trace.
func fail(cmd *cobra.Command, err error) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	caddy.Log().Error(msg)
	cmd.SilenceErrors = true
	cmd.SilenceUsage = true
	return errors.New(msg)
}

func printUp(w io.Writer, rep migrations.Report) {
	if !rep.Changed() {
		fmt.Fprintf(w, "✓ Already up to date (version %d)\n", rep.After.Version)
		return
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
	for _, t := range rep.Dropped() {
		fmt.Fprintf(w, "✓ Dropped table: %s\n", t)
	}
	if cols := rep.RemovedColumns(); len(cols) > 0 {
		fmt.Fprintf(w, "✓ Removed columns from social_accounts: %s\n", strings.Join(cols, ", "))
	}
	fmt.Fprintln(w, "✓ Kept social_accounts with its legacy columns and rows")
	fmt.Fprintf(w, "✓ Schema at version %d\n", rep.After.Version)
}

func printStatus(w io.Writer, s migrations.Schema) {
	state := "clean"
	if s.Dirty {
		state = "dirty: a run stopped part-way; `migrate up` repairs it"
	}
	if s.Version == 0 {
		fmt.Fprintln(w, "Applied version: none")
	} else {
		fmt.Fprintf(w, "Applied version: %d (%s)\n", s.Version, state)
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
	fmt.Fprintln(w, "Row level security:")
	for _, p := range s.RLS {
		fmt.Fprintf(w, "  %s %s\n", mark(p.Present), p.Name)
		complete = complete && p.Present
	}
	if complete && !s.Dirty {
		fmt.Fprintln(w, "Schema complete.")
	} else {
		fmt.Fprintln(w, "Schema incomplete: run `caddy credgate migrate up`.")
	}
}
