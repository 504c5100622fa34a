// Package migrations owns credgate's database schema.
//
// The schema lives in plain SQL files, NNN_name.up.sql and NNN_name.down.sql,
// embedded in the binary. Each up file is complete on its own so an operator
// can paste it into the Supabase SQL editor, as the migration guide describes,
// and every file is idempotent. That property is what lets this package
// recover from a half-finished run without asking the operator to "force" a
// version: re-running the files always converges.
//
// The files are applied with golang-migrate over pgx v5. golang-migrate holds
// a PostgreSQL advisory lock while it works, so two processes running Up at
// once are safe: one applies, the other waits and then finds nothing to do.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/internal/pgurl"
)

//go:embed *.sql
var files embed.FS

// VersionTable records the applied version. It is prefixed so that it cannot
// collide with a schema_migrations table the app may already have.
const VersionTable = "credgate_schema_migrations"

// runLockKey is the advisory lock that serialises credgate migration runs
// (an arbitrary constant: "cgmigr" in ASCII).
const runLockKey int64 = 0x63676d696772

// Files is the embedded SQL, for printing or for tools that apply it
// themselves.
func Files() fs.FS { return files }

// Tables credgate creates (social_accounts only when missing): the four the
// migration guide lists (001), then the audit roll-up (002), then the
// guarded rollout's window and latch (003), then the shared count of
// rollout decisions (004), then the renewals in flight (005), then the
// operator's settings for sharing the table with the app (006).
var Tables = []string{"oauth_states", "credential_audit_log", "token_refresh_queue", "encryption_keys",
	"credential_audit_daily", "credential_audit_rollups", "rollout_outcomes", "rollout_halts", "rollout_decisions", "renewal_leases",
	"credgate_settings", "backend_reads"}

// AccountColumns are the columns credgate adds to the app's social_accounts.
var AccountColumns = []string{
	"credentials_encrypted", "credentials_key_id", "credentials_version", "expires_at",
	"status", "scopes", "last_refreshed_at", "connected_via",
	"app_token_fingerprint", "app_token_current",
}

// Presence says whether one expected object exists.
type Presence struct {
	Name    string
	Present bool
}

// Schema is what Inspect finds in a database.
type Schema struct {
	// Version is the applied migration version; 0 when none is applied.
	Version uint
	// Dirty is true when a run stopped part-way. Up and Down repair it.
	Dirty bool
	// SocialAccounts is true when the app's table exists.
	SocialAccounts bool
	Tables         []Presence
	Columns        []Presence
	// RLS is, for each table credgate creates, whether row level security
	// is enabled on it.
	RLS []Presence
}

// Report describes what Up or Down changed.
type Report struct {
	Before, After Schema
}

// Changed reports whether the run changed the schema version.
func (r Report) Changed() bool { return r.Before.Version != r.After.Version || r.Before.Dirty }

// Created lists the tables that exist after the run but did not before.
func (r Report) Created() []string { return appeared(r.Before.Tables, r.After.Tables) }

// Dropped lists the tables that existed before the run but do not after.
func (r Report) Dropped() []string { return appeared(r.After.Tables, r.Before.Tables) }

// AddedColumns lists the social_accounts columns the run added.
func (r Report) AddedColumns() []string { return appeared(r.Before.Columns, r.After.Columns) }

// RemovedColumns lists the social_accounts columns the run removed.
func (r Report) RemovedColumns() []string { return appeared(r.After.Columns, r.Before.Columns) }

// RLSEnabled lists the tables on which the run switched row level security on.
func (r Report) RLSEnabled() []string { return appeared(r.Before.RLS, r.After.RLS) }

// appeared returns the names present in after but absent in before.
func appeared(before, after []Presence) []string {
	was := map[string]bool{}
	for _, p := range before {
		was[p.Name] = p.Present
	}
	var out []string
	for _, p := range after {
		if p.Present && !was[p.Name] {
			out = append(out, p.Name)
		}
	}
	return out
}

// ErrWouldDestroyCredentials is returned by Down when accounts hold
// tokens in credentials_encrypted that the app's plaintext columns do not
// have: dropping the blob would lose them. Pass DownOptions.Force to go
// ahead anyway.
type ErrWouldDestroyCredentials struct{ Accounts int64 }

func (e ErrWouldDestroyCredentials) Error() string {
	return fmt.Sprintf("%d accounts hold tokens only credentials_encrypted has (no plaintext, or a stale one from before the user reconnected through credgate); rolling back now would leave those users with no working token or a stale one. Run `caddy credgate writeback --all` first: it writes their current tokens into the app's columns, then run this again (--force rolls back anyway, and those users reconnect)", e.Accounts)
}

// DownOptions tune Down.
type DownOptions struct {
	// Force rolls back even when that destroys encrypted-only credentials.
	Force bool
}

// Up applies every migration not yet applied.
func Up(ctx context.Context, databaseURL string) (Report, error) {
	return run(ctx, databaseURL, func(m *migrate.Migrate, _ *sql.DB) error {
		err := m.Up()
		if _, ok := errors.AsType[migrate.ErrDirty](err); ok {
			// Every up file is idempotent and atomic, so replaying all of
			// them from nothing converges whatever the interrupted run was.
			if err := m.Force(-1); err != nil {
				return err
			}
			err = m.Up()
		}
		return err
	})
}

// Down reverts every applied migration: the seed's rollback plan. The app's
// social_accounts table, its legacy columns and its rows are never touched.
func Down(ctx context.Context, databaseURL string, opts DownOptions) (Report, error) {
	return run(ctx, databaseURL, func(m *migrate.Migrate, db *sql.DB) error {
		if !opts.Force {
			n, err := encryptedOnlyAccounts(ctx, db)
			if err != nil {
				return err
			}
			if n > 0 {
				return ErrWouldDestroyCredentials{Accounts: n}
			}
		}
		err := m.Down()
		if _, ok := errors.AsType[migrate.ErrDirty](err); ok {
			// Down files are idempotent too: replay all of them.
			if err := m.Force(int(latestVersion())); err != nil {
				return err
			}
			err = m.Down()
		}
		return err
	})
}

// Inspect reports the applied version and which expected objects exist
// (seed Phase 1, Step 1.3).
func Inspect(ctx context.Context, databaseURL string) (Schema, error) {
	db, err := open(ctx, databaseURL)
	if err != nil {
		return Schema{}, err
	}
	defer db.Close()
	return inspect(ctx, db)
}

func run(ctx context.Context, databaseURL string, step func(*migrate.Migrate, *sql.DB) error) (Report, error) {
	db, err := open(ctx, databaseURL)
	if err != nil {
		return Report{}, err
	}
	defer db.Close()

	src, err := iofs.New(files, ".")
	if err != nil {
		return Report{}, fmt.Errorf("reading embedded migrations: %w", err)
	}
	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{MigrationsTable: VersionTable})
	if err != nil {
		return Report{}, dberr.Explain("preparing the version table", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		return Report{}, dberr.Explain("preparing migrations", err)
	}
	// Closing m closes db too, so it must run after the lock is released.
	defer m.Close()

	// golang-migrate locks only around its own steps. Holding a lock of our
	// own across inspect, migrate and inspect makes the report true: a
	// runner that waited for another sees the finished schema as "before".
	lockConn, err := db.Conn(ctx)
	if err != nil {
		return Report{}, dberr.Explain("connecting", err)
	}
	defer lockConn.Close()
	if _, err := lockConn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, runLockKey); err != nil {
		return Report{}, dberr.Explain("waiting for another migration run", err)
	}
	defer lockConn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, runLockKey)

	var rep Report
	if rep.Before, err = inspect(ctx, db); err != nil {
		return rep, err
	}
	if err := step(m, db); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		if _, ok := errors.AsType[ErrWouldDestroyCredentials](err); ok {
			return rep, err
		}
		return rep, dberr.Explain("applying migrations", err)
	}
	rep.After, err = inspect(ctx, db)
	return rep, err
}

// open connects with a bounded connect timeout and checks the server
// answers, so that a bad URL or a dead server fails fast and plainly.
func open(ctx context.Context, databaseURL string) (*sql.DB, error) {
	poolCfg, err := pgurl.Parse(databaseURL)
	if err != nil {
		return nil, err
	}
	cfg := poolCfg.ConnConfig
	db := stdlib.OpenDB(*cfg)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, dberr.Explain(fmt.Sprintf("connecting to database %q on %s:%d", cfg.Database, cfg.Host, cfg.Port), err)
	}
	return db, nil
}

func inspect(ctx context.Context, db *sql.DB) (Schema, error) {
	var s Schema
	var versionTable bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, VersionTable).Scan(&versionTable); err != nil {
		return s, dberr.Explain("reading the schema", err)
	}
	if versionTable {
		var v int64
		err := db.QueryRowContext(ctx, `SELECT version, dirty FROM `+VersionTable+` LIMIT 1`).Scan(&v, &s.Dirty)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return s, dberr.Explain("reading the applied version", err)
		}
		if v > 0 {
			s.Version = uint(v)
		}
	}
	if err := db.QueryRowContext(ctx, `SELECT to_regclass('social_accounts') IS NOT NULL`).Scan(&s.SocialAccounts); err != nil {
		return s, dberr.Explain("reading the schema", err)
	}
	for _, t := range Tables {
		var present, rls bool
		err := db.QueryRowContext(ctx,
			`SELECT true, relrowsecurity FROM pg_class WHERE oid = to_regclass($1)`, t).Scan(&present, &rls)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return s, dberr.Explain("reading the schema", err)
		}
		s.Tables = append(s.Tables, Presence{Name: t, Present: present})
		s.RLS = append(s.RLS, Presence{Name: t, Present: rls})
	}
	rows, err := db.QueryContext(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'social_accounts'`)
	if err != nil {
		return s, dberr.Explain("reading the schema", err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return s, dberr.Explain("reading the schema", err)
		}
		have[c] = true
	}
	if err := rows.Err(); err != nil {
		return s, dberr.Explain("reading the schema", err)
	}
	for _, c := range AccountColumns {
		s.Columns = append(s.Columns, Presence{Name: c, Present: have[c]})
	}
	return s, nil
}

// encryptedOnlyAccounts counts accounts whose current tokens exist nowhere
// but in credentials_encrypted: no plaintext at all, or a row credgate
// connected (connected_via = 'credgate'), whose plaintext, if any, is the
// app's token from before the user reconnected. A legacy row credgate
// backfilled or renewed keeps its plaintext in step with the blob (a
// renewal writes both in one statement), so it loses nothing. This needs
// no key: the columns say which rows are which.
func encryptedOnlyAccounts(ctx context.Context, db *sql.DB) (int64, error) {
	var hasColumn bool
	err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'social_accounts'
		  AND column_name = 'credentials_encrypted')`).Scan(&hasColumn)
	if err != nil || !hasColumn {
		return 0, dberr.Explain("reading the schema", err)
	}
	var fingerprinted bool
	err = db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'social_accounts'
		  AND column_name = 'app_token_current')`).Scan(&fingerprinted)
	if err != nil {
		return 0, dberr.Explain("reading the schema", err)
	}
	// Before 006, any row credgate connected is counted. From 006 on, a
	// row is safe when the app's columns hold its current token: written
	// back (app_token_current), or written by the app after credgate's
	// last write (the newest token, a fingerprint that differs). Accounts
	// that need the user anyway (needs_reauth, revoked, disconnected)
	// lose nothing.
	query := `SELECT count(*) FROM social_accounts
		WHERE credentials_encrypted IS NOT NULL AND (access_token IS NULL OR connected_via = 'credgate')`
	if fingerprinted {
		query = `SELECT count(*) FROM social_accounts
			WHERE credentials_encrypted IS NOT NULL AND status IN ('connected', 'expiring')
			  AND (access_token IS NULL
			       OR (connected_via = 'credgate' AND NOT app_token_current
			           AND app_token_fingerprint IS NOT DISTINCT FROM credgate_app_token_fingerprint(access_token, refresh_token)))`
	}
	var n int64
	err = db.QueryRowContext(ctx, query).Scan(&n)
	return n, dberr.Explain("counting encrypted-only accounts", err)
}

// latestVersion is the highest version among the embedded files.
func latestVersion() uint {
	var latest uint
	entries, _ := fs.ReadDir(files, ".")
	for _, e := range entries {
		var v uint
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err == nil && v > latest {
			latest = v
		}
	}
	return latest
}
