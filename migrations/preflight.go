package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/credgate/credgate/internal/appschema"
	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/oauth"
)

// The app's social_accounts is the app's: credgate adds columns to it but
// otherwise takes it as it is. Its statements (vault's upsert, reads,
// renewals, disconnects) and the tables that reference it need a few
// things of it that ADD COLUMN IF NOT EXISTS cannot add and that nothing
// would notice until the first connect failed: the columns credgate reads
// and writes, of types its statements can use, a uuid key, and the unique
// (user_id, platform) its upsert names. Preflight checks them all at once,
// before Up changes anything, and `migrate status`, verify and
// service-health repeat it.

// Problem is one way the app's social_accounts falls short of what
// credgate's statements need, and how to fix it.
type Problem struct {
	// What is wrong and what it breaks.
	What string `json:"problem"`
	// Fix is the statement (or step) that fixes it.
	Fix string `json:"fix"`
	// Warning: credgate works, but not for everything; Up proceeds.
	Warning bool `json:"warning,omitempty"`
}

func (p Problem) String() string { return p.What + "; fix: " + p.Fix }

// Problems is Preflight's answer: the errors first, then the warnings.
type Problems []Problem

// Errors are the problems that stop Up: credgate's statements fail on
// the table as it is.
func (ps Problems) Errors() Problems {
	return slices.DeleteFunc(slices.Clone(ps), func(p Problem) bool { return p.Warning })
}

// Warnings are the problems that do not stop Up.
func (ps Problems) Warnings() Problems {
	return slices.DeleteFunc(slices.Clone(ps), func(p Problem) bool { return !p.Warning })
}

// ErrAppTable is returned by Up, before it changes anything, when the
// app's social_accounts lacks what credgate's statements need. Problems
// holds every problem found (the warnings too), each with its fix.
type ErrAppTable struct{ Problems Problems }

func (e ErrAppTable) Error() string {
	errs := e.Problems.Errors()
	var b strings.Builder
	fmt.Fprintf(&b, "social_accounts lacks what credgate's statements need (%d %s); nothing was changed. ", len(errs), plural(len(errs), "problem", "problems"))
	for i, p := range errs {
		fmt.Fprintf(&b, "(%d) %s. ", i+1, p)
	}
	if warns := e.Problems.Warnings(); len(warns) > 0 {
		b.WriteString("Also, not stopping up: ")
		for _, p := range warns {
			fmt.Fprintf(&b, "%s. ", p)
		}
	}
	b.WriteString("Then run `caddy credgate migrate up` again.")
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Querier is what Preflight reads through: a *pgx.Conn, a pgx.Tx, a
// *pgxpool.Pool, a vault.DB.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Preflight checks the app's social_accounts against what credgate's
// statements need and returns every problem with its fix, the errors
// first; none when the table does not exist (migration 001 creates it).
// It reads the catalog and, for the platform names in use, the table.
func Preflight(ctx context.Context, db Querier) (Problems, error) {
	return preflight(ctx, db, true)
}

// PreflightCatalog is Preflight without reading the table's rows (the
// platform names in use): only the catalog, so it is cheap enough for a
// health check on a large table.
func PreflightCatalog(ctx context.Context, db Querier) (Problems, error) {
	return preflight(ctx, db, false)
}

// preflightDB is Preflight over database/sql, as the runner and Inspect
// connect.
func preflightDB(ctx context.Context, db *sql.DB) (Problems, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, dberr.Explain("connecting", err)
	}
	defer conn.Close()
	var problems Problems
	err = conn.Raw(func(driverConn any) error {
		c, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("preflight: unexpected driver connection %T", driverConn)
		}
		problems, err = Preflight(ctx, c.Conn())
		return err
	})
	return problems, err
}

// appColumn is one column of the app's table as the catalog has it.
type appColumn struct {
	name, typ string // typ: format_type, as PostgreSQL prints it
	base      string // the type, through a domain, without modifiers
	notNull   bool
	hasDef    bool // a default, or an identity or generated column
	credgate  bool // commented "credgate: …"
}

// Type families credgate's statements accept.
var (
	textTypes      = []string{"text", "character varying"}
	timestampTypes = []string{"timestamp with time zone", "timestamp without time zone"}
)

// needed are the app's columns credgate's statements use, in the order
// reported, with what they are for and the column to add when missing.
var needed = []struct {
	name, use, add string
	types          []string
}{
	{"id", "", "", []string{"uuid"}},
	{"user_id", "", "", []string{"uuid"}},
	{"platform", "credgate finds an account by its user and platform name", "text", textTypes},
	{"platform_user_id", "credgate writes the account's id at the platform there", "text", textTypes},
	{"username", "credgate writes the account's name at the platform there", "text", textTypes},
	{"access_token", "credgate reads the app's plaintext token from it (backfill, the legacy flow) and clears it on disconnect", "text", textTypes},
	{"refresh_token", "credgate reads the app's plaintext refresh token from it and clears it on disconnect", "text", textTypes},
	{"created_at", "credgate reads when each account was created", "timestamptz NOT NULL DEFAULT now()", timestampTypes},
	{"updated_at", "credgate sets it on every write", "timestamptz NOT NULL DEFAULT now()", timestampTypes},
}

// insertedColumns are the app's columns credgate's insert of a new
// account names (besides its own); any other NOT NULL column of the app's
// needs a default.
var insertedColumns = []string{"id", "user_id", "platform", "platform_user_id", "username", "updated_at"}

func preflight(ctx context.Context, db Querier, readRows bool) (Problems, error) {
	fail := func(err error) (Problems, error) {
		return nil, dberr.Explain("checking the app's social_accounts", err)
	}
	var kind string
	rows, err := db.Query(ctx, `SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass('social_accounts')`)
	if err != nil {
		return fail(err)
	}
	kinds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fail(err)
	}
	if len(kinds) == 0 {
		return nil, nil // 001 creates it
	}
	kind = kinds[0]
	var errs, warns Problems
	add := func(warning bool, fix, what string, args ...any) {
		p := Problem{What: fmt.Sprintf(what, args...), Fix: fix, Warning: warning}
		if warning {
			warns = append(warns, p)
		} else {
			errs = append(errs, p)
		}
	}
	if kind != "r" && kind != "p" {
		add(false, "point credgate at the table itself (a table named social_accounts first on the search_path)",
			"social_accounts is a %s, not a table: credgate adds columns to it and writes rows", relkindName(kind))
		return errs, nil
	}

	rows, err = db.Query(ctx, `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
			format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL),
			a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
			coalesce(col_description(a.attrelid, a.attnum), '') LIKE 'credgate:%'
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = to_regclass('social_accounts') AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`)
	if err != nil {
		return fail(err)
	}
	var cols []appColumn
	var c appColumn
	_, err = pgx.ForEachRow(rows, []any{&c.name, &c.typ, &c.base, &c.notNull, &c.hasDef, &c.credgate}, func() error {
		cols = append(cols, c)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	var settings map[string]string
	if readRows {
		if settings, err = appSettings(ctx, db); err != nil {
			return fail(err)
		}
	}
	col := func(name string) (appColumn, bool) {
		i := slices.IndexFunc(cols, func(c appColumn) bool { return c.name == name })
		if i < 0 {
			return appColumn{}, false
		}
		return cols[i], true
	}

	// The unique indexes (primary key included) whose key is exactly a
	// set of plain columns, and whether ON CONFLICT and a foreign key
	// can use them (immediate, not partial, valid).
	rows, err = db.Query(ctx, `SELECT i.indisprimary, i.indimmediate AND i.indisvalid AND i.indpred IS NULL,
			array(SELECT a.attname::text FROM pg_attribute a
			      WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])
			      ORDER BY a.attname)
		FROM pg_index i
		WHERE i.indrelid = to_regclass('social_accounts') AND i.indisunique AND i.indexprs IS NULL`)
	if err != nil {
		return fail(err)
	}
	type uniqueIndex struct {
		primary, usable bool
		cols            []string
	}
	var uniques []uniqueIndex
	var u uniqueIndex
	_, err = pgx.ForEachRow(rows, []any{&u.primary, &u.usable, &u.cols}, func() error {
		uniques = append(uniques, u)
		return nil
	})
	if err != nil {
		return fail(err)
	}
	hasPrimary := slices.ContainsFunc(uniques, func(u uniqueIndex) bool { return u.primary })
	unique := func(cols ...string) (usable, deferrable bool) {
		slices.Sort(cols)
		for _, u := range uniques {
			if slices.Equal(u.cols, cols) {
				if u.usable {
					return true, false
				}
				deferrable = true
			}
		}
		return false, deferrable
	}

	// The columns credgate reads and writes, of types its statements use.
	for _, n := range needed {
		c, ok := col(n.name)
		switch {
		case !ok && n.name == "id":
			add(false, "ALTER TABLE social_accounts ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid(), then ALTER TABLE social_accounts ADD "+primaryOrUnique(hasPrimary),
				"credgate needs a uuid id: social_accounts has no column id (credgate binds each encrypted token to its row's id, and token_refresh_queue references it)")
		case !ok && n.name == "user_id":
			add(false, "ALTER TABLE social_accounts ADD COLUMN user_id uuid, filled with each row's user id, then SET NOT NULL",
				"social_accounts has no column user_id: credgate finds an account by its user (a uuid, the id the identity in the request names) and platform")
		case !ok:
			add(false, "ALTER TABLE social_accounts ADD COLUMN "+n.name+" "+n.add, "social_accounts has no column %s: %s", n.name, n.use)
		case slices.Contains(n.types, c.base):
			// Fine.
		case n.name == "id":
			fix := "move the key to a uuid column named id (for instance ALTER TABLE social_accounts RENAME COLUMN id TO legacy_id; ALTER TABLE social_accounts ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE) and the app's statements with it: credgate has no mapping for another key"
			if slices.Contains(textTypes, c.base) {
				fix = "if every id is a uuid in text form, ALTER TABLE social_accounts ALTER COLUMN id TYPE uuid USING id::uuid (with the columns of the app's tables that reference it, in the same transaction)"
			}
			add(false, fix, "credgate needs a uuid id: social_accounts.id is %s, token_refresh_queue references it as uuid (PostgreSQL refuses that foreign key: \"cannot be implemented\", 42804) and credgate gives new rows uuid ids", c.typ)
		case n.name == "user_id":
			fix := "credgate identifies users by uuid (the sub of the identity's token); an app with user ids of another kind needs a mapping credgate does not have"
			if slices.Contains(textTypes, c.base) {
				fix = "if every user_id is a uuid in text form, ALTER TABLE social_accounts ALTER COLUMN user_id TYPE uuid USING user_id::uuid"
			}
			add(false, fix, "credgate needs a uuid user_id: social_accounts.user_id is %s, and credgate's audit log and OAuth states hold user ids as uuid", c.typ)
		case slices.Equal(n.types, timestampTypes):
			add(false, "ALTER TABLE social_accounts ALTER COLUMN "+n.name+" TYPE timestamptz",
				"social_accounts.%s is %s: credgate reads and writes a timestamp there", n.name, c.typ)
		default:
			add(false, "ALTER TABLE social_accounts ALTER COLUMN "+n.name+" TYPE text",
				"social_accounts.%s is %s: credgate reads and writes text there", n.name, c.typ)
		}
	}

	// The key token_refresh_queue's foreign key references.
	if c, ok := col("id"); ok && c.base == "uuid" {
		if usable, _ := unique("id"); !usable {
			add(false, "ALTER TABLE social_accounts ADD "+primaryOrUnique(hasPrimary),
				"credgate needs a primary key on social_accounts.id: token_refresh_queue's foreign key references it (PostgreSQL refuses one without it: 42830)")
		}
		if !c.hasDef {
			add(true, "ALTER TABLE social_accounts ALTER COLUMN id SET DEFAULT gen_random_uuid()",
				"social_accounts.id has no default: credgate gives the accounts it creates an id of its own, but when a row for the same user and platform appears while a connect stores its token, credgate locks it with an insert that names no id, and that connect fails")
		}
	}

	// The upsert's conflict target.
	_, hasUser := col("user_id")
	_, hasPlatform := col("platform")
	if hasUser && hasPlatform {
		if usable, deferrable := unique("user_id", "platform"); !usable {
			what := "social_accounts has no unique constraint on (user_id, platform): credgate's upsert (INSERT … ON CONFLICT (user_id, platform)) needs one, and without it every connect fails"
			fix := "ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_user_id_platform_key UNIQUE (user_id, platform) (first remove the rows that repeat a user and platform)"
			if deferrable {
				what = "the unique constraint on social_accounts (user_id, platform) is DEFERRABLE, partial or not yet valid: ON CONFLICT cannot use it, so every connect fails"
				fix = "replace it with a plain one: ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_user_id_platform_key UNIQUE (user_id, platform), then drop the old one"
			}
			add(false, fix, "%s", what)
		}
	}

	// The app's own columns by credgate's names. expires_at, status and
	// scopes give way: credgate's are credgate_expires_at … then
	// (internal/appschema). Any other name, or a credgate_ name taken
	// too, 001 and 006 refuse, one at a time.
	for _, name := range append(slices.Clone(AccountColumns), movedNames()...) {
		c, ok := col(name)
		if !ok || c.credgate {
			continue
		}
		if slices.Contains(appschema.Movable, name) {
			if _, taken := col(appschema.Prefix + name); !taken && name == "expires_at" && slices.Contains(timestampTypes, c.base) && readRows && settings["app_expiry_column"] != name {
				add(true, "if it holds when the app's access token expires, caddy credgate app-expiry-column expires_at (after migrate up), so backfill and the legacy flow read it and credgate keeps it up to date",
					"social_accounts.expires_at is the app's (%s): credgate's own expiry column is credgate_expires_at, and credgate does not read the app's until it is named", c.typ)
			}
			continue
		}
		fix := "rename the app's column (ALTER TABLE social_accounts RENAME COLUMN " + name + " TO app_" + name + ") and the app's statements with it"
		add(false, fix, "social_accounts.%s already exists (%s) and is not credgate's: credgate adds a column by that name", name, c.typ)
	}

	// Columns credgate leaves or sets NULL.
	for _, c := range cols {
		switch {
		case c.credgate:
		case (c.name == "access_token" || c.name == "refresh_token") && c.notNull:
			add(false, "ALTER TABLE social_accounts ALTER COLUMN "+c.name+" DROP NOT NULL",
				"social_accounts.%s is NOT NULL: credgate leaves it NULL on the accounts it connects (their tokens are encrypted in credentials_encrypted) and clears it on disconnect and purge", c.name)
		case c.name == "created_at" && !c.hasDef:
			add(false, "ALTER TABLE social_accounts ALTER COLUMN created_at SET DEFAULT now()",
				"social_accounts.created_at has no default: credgate's insert of a new account leaves it NULL, and reading that account then fails")
		case c.notNull && !c.hasDef && !slices.Contains(insertedColumns, c.name) &&
			(!slices.Contains(AccountColumns, c.name) || slices.Contains(appschema.Movable, c.name)):
			add(false, "ALTER TABLE social_accounts ALTER COLUMN "+quoteIdent(c.name)+" SET DEFAULT … (or DROP NOT NULL)",
				"social_accounts.%s is NOT NULL without a default: credgate's insert of a new account does not name it, so every first connect fails", c.name)
		}
	}

	// Platform names credgate has no provider for: those rows stay the
	// app's.
	if c, ok := col("platform"); ok && readRows && slices.Contains(textTypes, c.base) {
		// The app's own names for credgate's platforms count as known
		// (caddy credgate app-platform-name, migration 006).
		known := slices.Clone(oauth.Platforms)
		for _, pair := range strings.Split(settings["app_platform_names"], ",") {
			if _, name, ok := strings.Cut(pair, "="); ok {
				known = append(known, strings.TrimSpace(name))
			}
		}
		rows, err := db.Query(ctx, `SELECT platform::text, count(*) FROM social_accounts
			WHERE platform::text <> ALL ($1::text[]) GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20`, known)
		if err != nil {
			return fail(err)
		}
		var name string
		var n int64
		_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error {
			add(true, fmt.Sprintf("if it is the app's name for one of credgate's platforms, say so: caddy credgate app-platform-name <platform> %s (after migrate up); otherwise configure a provider named %s (kind generic)", name, quoteLiteral(name)),
				"%d %s platform %s, for which credgate has no provider (it knows %s): credgate serves and renews an account only under its provider's name, so these stay the app's alone",
				n, plural(int(n), "row has", "rows have"), quoteLiteral(name), strings.Join(oauth.Platforms, ", "))
			return nil
		})
		if err != nil {
			return fail(err)
		}
	}
	return append(errs, warns...), nil
}

func primaryOrUnique(hasPrimary bool) string {
	if hasPrimary {
		return "CONSTRAINT social_accounts_id_key UNIQUE (id) (the table has another primary key)"
	}
	return "PRIMARY KEY (id)"
}

func relkindName(kind string) string {
	switch kind {
	case "v":
		return "view"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	case "S":
		return "sequence"
	}
	return "relation of kind " + kind
}

// quoteIdent quotes a column name for the fixes, only when it needs it.
func quoteIdent(s string) string {
	plain := s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_'
	}) && (s[0] < '0' || s[0] > '9')
	if plain {
		return s
	}
	return pgx.Identifier{s}.Sanitize()
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// movedNames are the names credgate's movable columns take where the app
// has its own (credgate_expires_at …).
func movedNames() []string {
	out := make([]string, len(appschema.Movable))
	for i, name := range appschema.Movable {
		out[i] = appschema.Prefix + name
	}
	return out
}

// appSettings reads the operator's settings (credgate_settings, migration
// 006); none before 006.
func appSettings(ctx context.Context, db Querier) (map[string]string, error) {
	var exists bool
	rows, err := db.Query(ctx, `SELECT to_regclass('credgate_settings') IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	if _, err := pgx.ForEachRow(rows, []any{&exists}, func() error { return nil }); err != nil || !exists {
		return nil, err
	}
	rows, err = db.Query(ctx, `SELECT name, value FROM credgate_settings`)
	if err != nil {
		return nil, err
	}
	settings := map[string]string{}
	var name, value string
	_, err = pgx.ForEachRow(rows, []any{&name, &value}, func() error { settings[name] = value; return nil })
	return settings, err
}
