package commands

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/vault"
)

// The commands that decide how credgate shares social_accounts with the
// unchanged app during the migration and on the way back: transition
// mode, who renews the app's tokens, the app's expiry column, and the
// write-back. The settings live in the database (credgate_settings), so
// every replica acts on them within seconds and every command sees them.

// openAccounts is openVault with the account store acting on the
// settings in the database (the app's platform names, expiry column,
// transition mode), which every batch command needs.
func openAccounts(ctx context.Context, cmd *cobra.Command) (*vault.Accounts, *vault.Keyring, *pgxpool.Pool, error) {
	keys, pool, err := openVault(ctx, cmd, vault.VerifyOptions{})
	if err != nil {
		return nil, nil, nil, err
	}
	settings, err := vault.LoadSettings(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	accounts := vault.NewAccounts(keys)
	accounts.UseSettings(vault.Fixed(settings))
	return accounts, keys, pool, nil
}

// settingBy names who changed a setting, for its audit row.
func settingBy(cmd *cobra.Command) string {
	by, _ := cmd.Flags().GetString("by")
	if by == "" {
		by = os.Getenv("USER")
	}
	return strings.TrimSpace("command " + by)
}

// onOffCommand is a setting with the values on and off.
func onOffCommand(use, short, long, name string, describe func(on bool) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use + " on|off|status",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			arg := cmd.Flags().Arg(0)
			if arg != "on" && arg != "off" && arg != "status" {
				return fmt.Errorf("%s takes on, off or status, not %q", use, arg)
			}
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			if arg != "status" {
				if err := vault.SetSetting(ctx, pool, name, arg, settingBy(cmd)); err != nil {
					return err
				}
			}
			s, err := vault.LoadSettings(ctx, pool)
			if err != nil {
				return err
			}
			on := s.TransitionMode
			if name == vault.SettingAppRefresh {
				on = !s.AppRefreshOff
			}
			fmt.Fprintln(cmd.OutOrStdout(), describe(on))
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().String("by", "", "who changes it, for the audit log (default: $USER)")
	return cmd
}

func transitionCommand() *cobra.Command {
	return onOffCommand("transition",
		"Transition mode: connects and renewals through credgate also write the app's plaintext columns",
		`Transition mode is for a back end that cannot read through credgate yet
(the token API or egress): while it is on, every connect and every renewal
through credgate also writes the new tokens into the app's own
access_token/refresh_token columns (and its expiry column, when
app-expiry-column names one), so the unchanged back end keeps posting
for the users credgate moved. It puts tokens back in plaintext: turn it
off, and purge, as soon as the back end reads through credgate. verify
fails and service-health reports it while it is on. Every replica acts on
it within 2 seconds.`,
		vault.SettingTransitionMode, func(on bool) string {
			if on {
				return "transition mode: ON (connects and renewals also write the app's plaintext columns)"
			}
			return "transition mode: off (credgate writes tokens only encrypted)"
		})
}

func appRefreshCommand() *cobra.Command {
	return onOffCommand("app-refresh",
		"Says whether the app still renews the tokens it stored (default on: credgate leaves them to it)",
		`"on" (the default) means the app still renews the tokens it stored itself:
credgate then never renews a row the app owns (rows it did not connect,
and rows the app wrote again after a rollback), so the two never race for
one grant (X rotates refresh tokens: one of two renewers loses the grant).
Such a token is served by the token API while its expiry (read from the
app's expiry column) is ahead, and answered 409 token_expired after.

"off" says the app's own refresh is switched off: credgate renews every
row from then on, and writes the new tokens to the app's columns where
the app still reads them. Every replica acts on it within 2 seconds.`,
		vault.SettingAppRefresh, func(on bool) string {
			if on {
				return "app-refresh: on (the app renews the tokens it stored; credgate leaves them to it)"
			}
			return "app-refresh: off (credgate renews every account, the app's too)"
		})
}

func appExpiryColumnCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app-expiry-column <column>|none|status",
		Short: "Names the app's own column for when its access token expires",
		Long: `Names the column of social_accounts where the app records when its access
token expires (a timestamp or timestamptz column), or "none". credgate
reads it wherever it takes a token from the app's columns (backfill, the
token API's legacy rows, a token the app wrote after a rollback) and
writes it wherever it writes those columns (transition mode, renewals of
the app's rows, writeback). Without it the token API cannot vouch for an
app token it has not renewed itself and answers 409 expiry_unknown.`,
		Args: cobra.ExactArgs(1),
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			arg := cmd.Flags().Arg(0)
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			switch arg {
			case "status":
			case "none":
				err = vault.SetSetting(ctx, pool, vault.SettingAppExpiryColumn, "", settingBy(cmd))
			default:
				if err = vault.CheckExpiryColumn(ctx, pool, arg); err == nil {
					err = vault.SetSetting(ctx, pool, vault.SettingAppExpiryColumn, arg, settingBy(cmd))
				}
			}
			if err != nil {
				return err
			}
			s, err := vault.LoadSettings(ctx, pool)
			if err != nil {
				return err
			}
			if s.AppExpiryColumn == "" {
				fmt.Fprintln(cmd.OutOrStdout(), "app expiry column: none")
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "app expiry column: social_accounts.%s\n", s.AppExpiryColumn)
			}
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().String("by", "", "who changes it, for the audit log (default: $USER)")
	return cmd
}

func writebackCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "writeback (--all | --platform <name> | --user <uuid>) [--dry-run]",
		Short: "Writes the tokens credgate holds back into the app's plaintext columns: the way back",
		Long: `Writes each live account's current token from credentials_encrypted into
the app's own access_token/refresh_token columns (and its expiry column,
when app-expiry-column names one), so the legacy app works again for the
users credgate moved. Run it before taking credgate out or before
'migrate down', which refuses until no account's token is only in the
blob. It changes no credential: credgate keeps serving and renewing the
accounts, and writes its renewals to those columns too from then on.

A token the app wrote itself after credgate's last write (a user who
reconnected through the legacy flow) is the newest and is left as it is.
--platform and --user narrow it (both may be given); --all is required
otherwise, so a bare command cannot write every token by accident.
Safe to run again, and from several processes at once. Every account
written gets an audit row. Exits 1 if a row could not be written.`,
		Args: cobra.NoArgs,
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			var f vault.WriteBackFilter
			f.Platform, _ = cmd.Flags().GetString("platform")
			f.UserID, _ = cmd.Flags().GetString("user")
			all, _ := cmd.Flags().GetBool("all")
			if f.UserID != "" {
				id, err := uuid.Parse(f.UserID)
				if err != nil {
					return errors.New("--user must be a user id (a UUID)")
				}
				f.UserID = id.String()
			}
			if f.Platform == "" && f.UserID == "" && !all {
				return errors.New("say which accounts: --all, --platform <name> or --user <uuid>")
			}
			accounts, _, pool, err := openAccounts(ctx, cmd)
			if err != nil {
				return err
			}
			defer pool.Close()
			w := cmd.OutOrStdout()
			if dry, _ := cmd.Flags().GetBool("dry-run"); dry {
				plan, err := accounts.PlanWriteBack(ctx, pool, f)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "dry run: up to %d accounts would get their current token in the app's columns, %d hold a newer token the app wrote and would keep it; nothing was changed\n",
					plan.ToWrite, plan.Newer)
				return nil
			}
			size, _ := cmd.Flags().GetInt("batch-size")
			p, err := withProgress(w, "writeback", progressInterval, func(report func(vault.Progress)) (vault.Progress, error) {
				return accounts.WriteBack(ctx, pool, f, vault.BatchOptions{BatchSize: size, Worker: hostname(), Progress: report})
			})
			if err != nil {
				return err
			}
			printWriteBack(w, p)
			if p.Failed > 0 {
				return fmt.Errorf("%d accounts could not be written back: their blob does not open with the configured keys (see failed writeback rows in credential_audit_log)", p.Failed)
			}
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().Int("batch-size", vault.DefaultBatchSize, "rows per transaction")
	cmd.Flags().Bool("all", false, "every account")
	cmd.Flags().String("platform", "", "only this platform's accounts")
	cmd.Flags().String("user", "", "only this user's accounts")
	cmd.Flags().Bool("dry-run", false, "only count what would be done")
	return cmd
}

func printWriteBack(w io.Writer, p vault.Progress) {
	fmt.Fprintf(w, "✓ writeback: %d accounts written to the app's columns, %d already there, %d kept the newer token the app wrote, %d failed (%s)\n",
		p.Done, p.Skipped, p.Newer, p.Failed, p.Elapsed.Round(time.Millisecond))
}

func init() { rolloutSetPreflight = backEndReadsThroughCredgate }

// backEndReadsThroughCredgate is `rollout set`'s check before it moves
// anyone: a moved user's new token is in credgate, not in the app's
// table, so the app's back end must read each platform's tokens through
// credgate (the token API or egress, seen in the last hour by any
// replica) or transition mode must be on. A platform with no live
// account yet is let through: nobody on it can lose a token.
func backEndReadsThroughCredgate(ctx context.Context, cmd *cobra.Command, platforms []string, _ float64) error {
	if force, _ := cmd.Flags().GetBool("force"); force {
		return nil
	}
	pool, err := vault.OpenPool(ctx, databaseURL(cmd))
	if err != nil {
		return fmt.Errorf("%w (rollout set checks that the app's back end reads through credgate first; --force skips the check)", err)
	}
	defer pool.Close()
	settings, err := vault.LoadSettings(ctx, pool)
	if err != nil {
		return err
	}
	if settings.TransitionMode {
		return nil
	}
	reads, err := vault.BackendReadsIn(ctx, pool, vault.BackendReadWindow)
	if err != nil {
		return err
	}
	rows, err := pool.Query(ctx, settings.Columns.SQL(`SELECT DISTINCT platform FROM social_accounts
		WHERE {status} IN ('connected', 'expiring') AND (access_token IS NOT NULL OR credentials_encrypted IS NOT NULL)`))
	if err != nil {
		return fmt.Errorf("reading the platforms in use: %w", err)
	}
	inUse := map[string]bool{}
	var name string
	if _, err := pgx.ForEachRow(rows, []any{&name}, func() error { inUse[settings.Platform(name)] = true; return nil }); err != nil {
		return fmt.Errorf("reading the platforms in use: %w", err)
	}
	var unread []string
	for _, p := range platforms {
		if inUse[p] && reads[p].Total() == 0 {
			unread = append(unread, p)
		}
	}
	if len(unread) > 0 {
		return fmt.Errorf("the app's back end has not read a %s token through credgate in the last hour, and transition mode is off: the users this moves would get tokens the back end cannot see, and their posts would fail. Switch the back end to the token API or egress, or run `caddy credgate transition on` (RUNBOOK, Phase 3½), then run this again; --force raises it anyway",
			strings.Join(unread, " or "))
	}
	return nil
}

func appPlatformNameCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app-platform-name <platform> <the app's name>|default|status",
		Short: "Names the app's own value of social_accounts.platform for one of credgate's platforms (x for twitter)",
		Long: `Tells credgate what the app stores in social_accounts.platform for one of
credgate's platforms when it is not credgate's name (an app that stores
X as "x" rather than "twitter"): credgate then finds, stores, renews,
writes back and rotates those accounts under the app's name in the row,
and keeps its own name everywhere else (the Caddyfile's providers, routes,
the token API, the audit log, metrics). "default" removes the name. Every
replica acts on it within 2 seconds; set it before the first connect
through credgate, or credgate's rows and the app's would not meet.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: interruptible(func(ctx context.Context, cmd *cobra.Command) error {
			args := cmd.Flags().Args()
			pool, err := vault.OpenPool(ctx, databaseURL(cmd))
			if err != nil {
				return err
			}
			defer pool.Close()
			s, err := vault.LoadSettings(ctx, pool)
			if err != nil {
				return err
			}
			if args[0] != "status" {
				if len(args) != 2 {
					return errors.New("name the app's value: app-platform-name <platform> <name>|default")
				}
				platform, name := strings.ToLower(strings.TrimSpace(args[0])), strings.TrimSpace(args[1])
				if !slices.Contains(oauth.Platforms, platform) {
					return fmt.Errorf("unknown platform %q (credgate's are %s)", platform, strings.Join(oauth.Platforms, ", "))
				}
				names := maps.Clone(s.PlatformNames)
				if names == nil {
					names = map[string]string{}
				}
				switch {
				case name == "default" || name == platform:
					delete(names, platform)
				case strings.ContainsAny(name, ",=") || name == "":
					return fmt.Errorf("%q cannot be a platform name here (no commas or equals signs)", name)
				case slices.Contains(oauth.Platforms, name):
					return fmt.Errorf("%q is credgate's name for another platform", name)
				default:
					names[platform] = name
				}
				if _, err := vault.ParsePlatformNames(vault.FormatPlatformNames(names)); err != nil {
					return err
				}
				if err := vault.SetSetting(ctx, pool, vault.SettingAppPlatformNames, vault.FormatPlatformNames(names), settingBy(cmd)); err != nil {
					return err
				}
				s.PlatformNames = names
			}
			w := cmd.OutOrStdout()
			for _, p := range oauth.Platforms {
				fmt.Fprintf(w, "%s: the app stores %q\n", p, s.AppPlatform(p))
			}
			return nil
		}),
	}
	cmd.Flags().String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	cmd.Flags().String("by", "", "who changes it, for the audit log (default: $USER)")
	return cmd
}
