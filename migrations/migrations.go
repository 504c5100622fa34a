// Package migrations owns credgate's database schema.
//
// The schema lives in plain SQL files, NNN_name.up.sql and NNN_name.down.sql,
// embedded in the binary. Each up file is complete on its own so an operator
// can paste it into the Supabase SQL editor, as the migration guide describes,
// and every file is idempotent.
//
// Each file is also all or nothing. golang-migrate's pgx driver (without
// x-multi-statement, which this package never sets) sends a whole file in
// one ExecContext with no arguments; pgx sends a query without arguments
// over the simple protocol, as one Query message; and PostgreSQL runs the
// statements of one Query message as one implicit transaction. So a file
// that fails leaves nothing of itself behind, and golang-migrate's "dirty"
// version (it marks the version dirty before running a file and clean
// after) can only mean: that file applied whole or not at all. The next Up
// therefore resets a dirty version to the one before it and runs the file
// again, which idempotence makes safe even when the file had in fact
// committed. TestEveryFileIsAllOrNothing checks it file by file: a file
// with BEGIN or COMMIT of its own would break it.
//
// A failed file is recorded (see Failure) so that `migrate status` can say
// later what happened and what to do.
//
// golang-migrate holds a PostgreSQL advisory lock while it works, so two
// processes running Up at once are safe: one applies, the other waits and
// then finds nothing to do.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/credgate/credgate/internal/appschema"
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
// operator's settings for sharing the table with the app (006), then the
// legacy flows credgate saw begin (008), then the account events for the
// app's webhook (009). 007 adds
// no table: a column on the audit log (AuditColumns).
var Tables = []string{"oauth_states", "credential_audit_log", "token_refresh_queue", "encryption_keys",
	"credential_audit_daily", "credential_audit_rollups", "rollout_outcomes", "rollout_halts", "rollout_decisions", "renewal_leases",
	"credgate_settings", "backend_reads", "legacy_flows", "credgate_webhook_outbox"}

// AccountColumns are the columns credgate adds to the app's social_accounts.
var AccountColumns = []string{
	"credentials_encrypted", "credentials_key_id", "credentials_version", "expires_at",
	"status", "scopes", "last_refreshed_at", "connected_via",
	"app_token_fingerprint", "app_token_current",
}

// AuditColumns are the columns later migrations add to
// credential_audit_log: events (007), how many events a row stands for.
var AuditColumns = []string{"events"}

// Presence says whether one expected object exists.
type Presence struct {
	Name    string
	Present bool
}

// Schema is what Inspect finds in a database.
type Schema struct {
	// Version is the applied migration version; 0 when none is applied.
	// When Dirty, it is golang-migrate's number, which is not what is
	// applied: see Applied.
	Version uint
	// Dirty is true when a run failed in a file or stopped inside one.
	// Up runs that file again, Down runs every down file again.
	Dirty bool
	// Failure is what the failed run recorded, when Dirty and it could
	// record it (a run whose process or connection died records nothing).
	Failure *Failure
	// dirtyVersion is the version table's own number, -1 included.
	dirtyVersion int
	// SocialAccounts is true when the app's table exists.
	SocialAccounts bool
	Tables         []Presence
	Columns        []Presence
	// AuditColumns are AuditColumns on credential_audit_log.
	AuditColumns []Presence
	// RLS is, for each table credgate creates, whether row level security
	// is enabled on it.
	RLS []Presence
	// AppTable is what Preflight finds wrong with the app's
	// social_accounts (see Problems.Errors: the schema is not usable
	// while there are any). Inspect fills it; in a Report, Before holds
	// the warnings an up went ahead with.
	AppTable Problems
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

// AddedAuditColumns lists the credential_audit_log columns the run added.
func (r Report) AddedAuditColumns() []string {
	return appeared(r.Before.AuditColumns, r.After.AuditColumns)
}

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

// ErrTransactionPooler refuses a migration through a transaction-mode
// pooler, before it connects.
var ErrTransactionPooler = errors.New("migrate needs a direct or session-mode connection, and this database URL goes through a transaction-mode pooler " +
	"(pooler=transaction, pgbouncer=true or port 6543): the lock that keeps two runs apart and each file's lock_timeout live in a session, which such a pooler does not keep. " +
	"Use the direct connection or the session pooler for migrate (Supabase: port 5432 of the pooler host, or db.<project>.supabase.co); the running credgate may use the transaction pooler")

// DownOptions tune Down.
type DownOptions struct {
	// Force rolls back even when that destroys encrypted-only credentials.
	Force bool
}

// Failure is a migration file that failed, as the failed run records it
// in the version table's comment. golang-migrate's own record, a version
// and a dirty flag, says neither which file nor why nor whether anything
// of it was applied, and the operator who reads `migrate status` later
// needs all three.
type Failure struct {
	// Direction is "up" or "down".
	Direction string `json:"direction"`
	// File is the SQL file that failed, such as
	// 001_improve_credentials.up.sql.
	File string `json:"file"`
	// Cause is PostgreSQL's message and SQLSTATE on one line, or the
	// error of a connection that broke.
	Cause string `json:"cause"`
	// SQLState is PostgreSQL's error code; empty when it did not answer.
	SQLState string `json:"sqlstate,omitempty"`
	// RolledBack is true when PostgreSQL refused the file: its
	// transaction rolled back and nothing of it was applied. When false
	// (the connection broke), it applied whole or not at all.
	RolledBack bool `json:"rolled_back"`
	// Applied is the version the schema is at when RolledBack.
	Applied uint `json:"applied"`
	// Command runs the failed step again.
	Command string    `json:"command"`
	At      time.Time `json:"at"`
}

// Outcome says what the failure left of the file.
func (f Failure) Outcome() string {
	if f.RolledBack {
		return "Nothing of " + f.File + " was applied: each file runs as one transaction."
	}
	return f.File + " applied whole or not at all (each file runs as one transaction), and running it again is safe."
}

// Next is the exact next step.
func (f Failure) Next() string {
	again := "run `" + f.Command + "` again"
	if f.Direction == "up" {
		again += ": it starts at " + f.File
	} else {
		again += ": it runs every down file, which is safe"
	}
	switch {
	case f.SQLState == "55P03": // lock_not_available: the files' lock_timeout
		return "a session holds a lock on a table this file changes, most often a long transaction of the app's on social_accounts " +
			"(SELECT pid, xact_start, state, query FROM pg_stat_activity WHERE xact_start IS NOT NULL ORDER BY xact_start lists the oldest); once it has ended, " + again
	case f.SQLState == "42501": // insufficient_privilege
		return "connect as the owner of social_accounts (on Supabase, the postgres role), then " + again
	case f.SQLState == "57014": // query_canceled: a statement_timeout
		return "raise statement_timeout for the role in DATABASE_URL (ALTER ROLE … SET statement_timeout = '5min'), then " + again
	case f.SQLState == "", strings.HasPrefix(f.SQLState, "08"), strings.HasPrefix(f.SQLState, "57"),
		f.SQLState == "40001", f.SQLState == "40P01":
		return "once the database answers, " + again
	}
	return "do what PostgreSQL's message says, then " + again
}

// ErrMigrationFailed is returned by Up and Down when a migration file
// failed: it names the file, PostgreSQL's answer and the next step.
type ErrMigrationFailed struct{ Failure }

func (e ErrMigrationFailed) Error() string {
	return fmt.Sprintf("%s failed: %s. %s Next: %s.", e.File, e.Cause, e.Outcome(), e.Next())
}

// Applied is the version the schema is at, and whether that is known: a
// dirty version hides whether its file applied, unless PostgreSQL refused
// the file.
func (s Schema) Applied() (uint, bool) {
	switch {
	case !s.Dirty:
		return s.Version, true
	case s.Failure != nil && s.Failure.RolledBack:
		return s.Failure.Applied, true
	}
	return 0, false
}

// Dirtiness says, for a dirty schema, what happened and the exact next
// step; both are empty when the schema is clean.
func (s Schema) Dirtiness() (happened, next string) {
	if !s.Dirty {
		return "", ""
	}
	if f := s.Failure; f != nil {
		return fmt.Sprintf("`%s` failed in %s at %s: %s. %s", f.Command, f.File, f.At.UTC().Format("2006-01-02 15:04:05 UTC"), f.Cause, f.Outcome()), f.Next()
	}
	// No record: the run's process or connection died before it could
	// write one, or another tool left the flag. Either direction may have
	// been running.
	up, down := failedFile(files, s.dirtyVersion, "up"), failedFile(files, s.dirtyVersion, "down")
	var where string
	switch {
	case up != "" && down != "":
		where = up + " (or, if it was rolling back, in " + down + ")"
	case up != "":
		where = up
	case down != "":
		where = down
	default:
		where = fmt.Sprintf("version %d, which this binary's migrations do not have", s.dirtyVersion)
	}
	happened = "stopped in " + where + " without recording why: its process or its connection died. Each file runs as one transaction, so it applied whole or not at all."
	switch {
	case up != "":
		next = "run `caddy credgate migrate up`: it runs " + up + " again, which is safe"
		if down != "" {
			next += " (to finish a rollback instead, run `caddy credgate migrate down`)"
		}
	case down != "":
		next = "run `caddy credgate migrate down` to finish the rollback (or `caddy credgate migrate up` to apply everything again)"
	default:
		next = "run the newer credgate that applied it"
	}
	return happened, next
}

// failed records and describes the file that left the version dirty when
// step returned err; ok is false when nothing is dirty (the run failed
// before or between files).
func failed(ctx context.Context, db *sql.DB, fsys fs.FS, direction, command string, err error) (Failure, bool) {
	// The run may have failed because ctx ended; the record is still due.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var v int
	var dirty bool
	if db.QueryRowContext(ctx, `SELECT version, dirty FROM `+VersionTable+` LIMIT 1`).Scan(&v, &dirty) != nil || !dirty {
		return Failure{}, false
	}
	f := Failure{Direction: direction, File: failedFile(fsys, v, direction), Command: command, At: time.Now().UTC()}
	if f.File == "" {
		return Failure{}, false
	}
	// golang-migrate's driver returns a database.Error value for the SQL
	// of a file and a pointer for its own bookkeeping; the value embeds
	// the whole file in its message, so the cause is taken from inside.
	cause := err
	if dbErr, ok := errors.AsType[database.Error](err); ok && dbErr.OrigErr != nil {
		cause = dbErr.OrigErr
	} else if dbErr, ok := errors.AsType[*database.Error](err); ok && dbErr.OrigErr != nil {
		cause = dbErr.OrigErr
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](cause); ok {
		f.SQLState = pgErr.Code
		f.Cause = dberr.OneLine(pgErr.Message)
		if pgErr.Detail != "" {
			f.Cause += " (" + dberr.OneLine(pgErr.Detail) + ")"
		}
		f.Cause += " (SQLSTATE " + pgErr.Code + ")"
		// An ERROR aborts the implicit transaction; a FATAL ends the
		// session, and whether the commit came first nobody can tell.
		_, fromFile := errors.AsType[database.Error](err)
		f.RolledBack = fromFile && pgErr.Severity == "ERROR"
	} else {
		f.Cause = dberr.OneLine(cause.Error())
	}
	if f.RolledBack {
		if direction == "up" {
			prev, _ := previousVersion(fsys, v)
			f.Applied = uint(max(prev, 0))
		} else {
			var n int
			fmt.Sscanf(f.File, "%d_", &n)
			f.Applied = uint(n)
		}
	}
	recordFailure(ctx, db, &f)
	return f, true
}

// recordFailure writes f as the version table's comment, or clears it
// when f is nil. It is best effort: a role that does not own the version
// table cannot comment on it, and the failure is returned to the caller
// anyway. PostgreSQL quotes the comment (COMMENT takes no parameters).
func recordFailure(ctx context.Context, db *sql.DB, f *Failure) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var text sql.NullString
	if f != nil {
		b, _ := json.Marshal(f)
		text = sql.NullString{String: string(b), Valid: true}
	}
	var stmt string
	if db.QueryRowContext(ctx, `SELECT format('COMMENT ON TABLE %I IS %L', $1::text, $2::text)`, VersionTable, text).Scan(&stmt) == nil {
		db.ExecContext(ctx, stmt)
	}
}

// Up applies every migration not yet applied.
func Up(ctx context.Context, databaseURL string) (Report, error) {
	return up(ctx, databaseURL, files)
}

func up(ctx context.Context, databaseURL string, fsys fs.FS) (Report, error) {
	return run(ctx, databaseURL, fsys, "up", "caddy credgate migrate up", preflightDB, func(m *migrate.Migrate, _ *sql.DB) error {
		err := m.Up()
		if dirty, ok := errors.AsType[migrate.ErrDirty](err); ok {
			// The dirty file applied whole or not at all (see the package
			// comment), so the schema is at the version before it, or at
			// its own, where running it again changes nothing.
			prev, perr := previousVersion(fsys, dirty.Version)
			if perr != nil {
				return perr
			}
			if err := m.Force(prev); err != nil {
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
	return down(ctx, databaseURL, opts, files)
}

func down(ctx context.Context, databaseURL string, opts DownOptions, fsys fs.FS) (Report, error) {
	command := "caddy credgate migrate down"
	if opts.Force {
		command += " --force"
	}
	return run(ctx, databaseURL, fsys, "down", command, nil, func(m *migrate.Migrate, db *sql.DB) error {
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
			// Down files are idempotent too: replay all of them, which
			// also covers a dirty version an up run left.
			if err := m.Force(int(latestVersion(fsys))); err != nil {
				return err
			}
			err = m.Down()
		}
		return err
	})
}

// Inspect reports the applied version, which expected objects exist
// (seed Phase 1, Step 1.3) and what the app's social_accounts lacks
// (Preflight).
func Inspect(ctx context.Context, databaseURL string) (Schema, error) {
	db, err := open(ctx, databaseURL)
	if err != nil {
		return Schema{}, err
	}
	defer db.Close()
	s, err := inspect(ctx, db)
	if err != nil {
		return s, err
	}
	s.AppTable, err = preflightDB(ctx, db)
	return s, err
}

// run applies step under credgate's lock between two inspections. A file
// that fails is recorded and returned as ErrMigrationFailed; direction and
// command say which files step runs and how an operator runs it again.
// check, when set, runs under the lock before anything changes, the
// version table included (golang-migrate creates it as it prepares):
// Up's Preflight, whose errors refuse the run as ErrAppTable and whose
// warnings land in the report's Before.AppTable.
func run(ctx context.Context, databaseURL string, fsys fs.FS, direction, command string,
	check func(context.Context, *sql.DB) (Problems, error), step func(*migrate.Migrate, *sql.DB) error) (Report, error) {
	// The run's lock is a session advisory lock and each file sets
	// lock_timeout for its session: neither survives a transaction-mode
	// pooler, which hands every transaction another server connection.
	if mode, err := pgurl.Pooler(databaseURL); err != nil {
		return Report{}, err
	} else if mode == pgurl.TransactionPooler {
		return Report{}, ErrTransactionPooler
	}
	db, err := open(ctx, databaseURL)
	if err != nil {
		return Report{}, err
	}
	defer db.Close()

	src, err := iofs.New(fsys, ".")
	if err != nil {
		return Report{}, fmt.Errorf("reading embedded migrations: %w", err)
	}

	// golang-migrate locks only around its own steps. Holding a lock of our
	// own across inspect, migrate and inspect makes the report true: a
	// runner that waited for another sees the finished schema as "before".
	// It is taken before golang-migrate prepares (which creates the
	// version table), so that check runs before anything changes.
	lockConn, err := db.Conn(ctx)
	if err != nil {
		return Report{}, dberr.Explain("connecting", err)
	}
	// Closing m (below) closes db too, so the lock is released by a
	// deferred call that runs before m's.
	unlock := func() {
		lockConn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, runLockKey)
		lockConn.Close()
	}
	if _, err := lockConn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, runLockKey); err != nil {
		lockConn.Close()
		return Report{}, dberr.Explain("waiting for another migration run", err)
	}
	var rep Report
	if rep.Before, err = inspect(ctx, db); err != nil {
		unlock()
		return rep, err
	}
	if check != nil {
		problems, err := check(ctx, db)
		if err != nil {
			unlock()
			return rep, err
		}
		if len(problems.Errors()) > 0 {
			unlock()
			return rep, ErrAppTable{Problems: problems}
		}
		rep.Before.AppTable = problems
	}

	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{MigrationsTable: VersionTable})
	if err != nil {
		unlock()
		return rep, dberr.Explain("preparing the version table", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		unlock()
		return rep, dberr.Explain("preparing migrations", err)
	}
	defer m.Close()
	defer unlock()

	if err := step(m, db); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		if _, ok := errors.AsType[ErrWouldDestroyCredentials](err); ok {
			return rep, err
		}
		if f, ok := failed(ctx, db, fsys, direction, command, err); ok {
			return rep, ErrMigrationFailed{f}
		}
		return rep, dberr.Explain("applying migrations", err)
	}
	if rep.Before.Failure != nil {
		// Best effort: a stale record is shown only while the version is
		// dirty, and this run left it clean.
		recordFailure(ctx, db, nil)
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
		var record sql.NullString
		err := db.QueryRowContext(ctx, `SELECT version, dirty, obj_description(to_regclass($1), 'pg_class')
			FROM `+VersionTable+` LIMIT 1`, VersionTable).Scan(&v, &s.Dirty, &record)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return s, dberr.Explain("reading the applied version", err)
		}
		if v > 0 {
			s.Version = uint(v)
		}
		s.dirtyVersion = int(v)
		var f Failure
		if s.Dirty && record.Valid && json.Unmarshal([]byte(record.String), &f) == nil && f.File != "" {
			s.Failure = &f
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
	for _, c := range AuditColumns {
		var present bool
		err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
			WHERE attrelid = to_regclass('credential_audit_log') AND attname = $1 AND attnum > 0 AND NOT attisdropped)`, c).Scan(&present)
		if err != nil {
			return s, dberr.Explain("reading the schema", err)
		}
		s.AuditColumns = append(s.AuditColumns, Presence{Name: c, Present: present})
	}
	// A column counts as credgate's only with credgate's comment: an app
	// column that happens to be called expires_at or status is the app's
	// (the preflight names it), not a sign that the schema is in place.
	rows, err := db.QueryContext(ctx, `SELECT a.attname FROM pg_attribute a
		WHERE a.attrelid = to_regclass(quote_ident(current_schema()) || '.social_accounts')
		  AND a.attnum > 0 AND NOT a.attisdropped
		  AND coalesce(col_description(a.attrelid, a.attnum), '') LIKE 'credgate:%'`)
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
		// Where the app has its own expires_at, status or scopes,
		// credgate's is credgate_expires_at … (internal/appschema), and
		// the report names the column the table has.
		if moved := appschema.Prefix + c; slices.Contains(appschema.Movable, c) && !have[c] && have[moved] {
			c = moved
		}
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
		rows, err := db.QueryContext(ctx, appschema.LoadSQL)
		if err != nil {
			return 0, dberr.Explain("reading the schema", err)
		}
		var moved []string
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return 0, dberr.Explain("reading the schema", err)
			}
			moved = append(moved, name)
		}
		if err := rows.Close(); err != nil {
			return 0, dberr.Explain("reading the schema", err)
		}
		query = appschema.Of(moved).SQL(`SELECT count(*) FROM social_accounts WHERE ` + TokenOnlyInCredgate)
	}
	var n int64
	err = db.QueryRowContext(ctx, query).Scan(&n)
	return n, dberr.Explain("counting encrypted-only accounts", err)
}

// TokenOnlyInCredgate is true on a social_accounts row (from 006 on)
// whose live current token is in credgate's blob and not in the app's
// columns: no plaintext, or a credgate-connected row whose plaintext is
// the app's superseded token (seen by credgate, not written back). The
// unchanged app cannot post for such an account, and `migrate down`
// would lose its token. It names status by its placeholder: a statement
// it is in goes through appschema.Columns.SQL.
const TokenOnlyInCredgate = `credentials_encrypted IS NOT NULL AND {status} IN ('connected', 'expiring')
	AND (access_token IS NULL
	     OR (connected_via = 'credgate' AND NOT app_token_current
	         AND app_token_fingerprint IS NOT DISTINCT FROM credgate_app_token_fingerprint(access_token, refresh_token)))`

// versions lists the versions of the files in fsys, in order.
func versions(fsys fs.FS) []int {
	var out []int
	entries, _ := fs.ReadDir(fsys, ".")
	for _, e := range entries {
		var v int
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err == nil && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// latestVersion is the highest version among the files.
func latestVersion(fsys fs.FS) uint {
	vs := versions(fsys)
	if len(vs) == 0 {
		return 0
	}
	return uint(vs[len(vs)-1])
}

// previousVersion is the version before v, or -1 (nothing applied) for
// the first. golang-migrate writes -1 dirty when the first down file
// fails.
func previousVersion(fsys fs.FS, v int) (int, error) {
	if v == -1 {
		return -1, nil
	}
	vs := versions(fsys)
	i := slices.Index(vs, v)
	switch {
	case i < 0:
		return 0, fmt.Errorf("the version table says %d (dirty), which this binary's migrations do not have: a newer credgate ran them; use it", v)
	case i == 0:
		return -1, nil
	}
	return vs[i-1], nil
}

// fileName is the name of version v's file in the given direction ("up"
// or "down"), or "" when there is none.
func fileName(fsys fs.FS, v int, direction string) string {
	entries, _ := fs.ReadDir(fsys, ".")
	for _, e := range entries {
		var n int
		if _, err := fmt.Sscanf(e.Name(), "%d_", &n); err == nil && n == v && strings.HasSuffix(e.Name(), "."+direction+".sql") {
			return e.Name()
		}
	}
	return ""
}

// failedFile names the file a run in direction was running when it left
// the version table dirty at v: golang-migrate marks the target version
// dirty before it runs a file, which for up is the file's own version and
// for down the one before it.
func failedFile(fsys fs.FS, v int, direction string) string {
	if direction == "up" {
		return fileName(fsys, v, "up")
	}
	for _, n := range versions(fsys) {
		if n > v {
			return fileName(fsys, n, "down")
		}
	}
	return ""
}
