package migrations_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
)

const appRows = `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token) VALUES
	('00000000-0000-4000-8000-000000000001', 'twitter', 'a1', 'r1'),
	('00000000-0000-4000-8000-000000000001', 'linkedin', 'a2', NULL),
	('00000000-0000-4000-8000-000000000002', 'facebook', 'a3', NULL)`

// assertUntouched checks that a refused up changed nothing: no table of
// credgate's (the version table included), no column, the same dump.
func assertUntouched(t *testing.T, url string, columns []string, dump string) {
	t.Helper()
	var tables []string
	rows, err := connect(t, url).Query(context.Background(), `SELECT relname::text FROM pg_class
		WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace AND relname <> 'social_accounts' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	if len(tables) > 0 {
		t.Errorf("a refused up created tables: %v", tables)
	}
	if got := pgtest.Columns(t, url); !slices.Equal(got, columns) {
		t.Errorf("a refused up changed the columns: %v, was %v", got, columns)
	}
	if after := dumpDatabase(t, url); after != dump {
		t.Errorf("a refused up changed the database:\n%s", lineDiff(dump, after))
	}
}

// Each table credgate's statements cannot use: up refuses before any
// change, with one error naming the problem and its fix, and status
// (Inspect) reports the same problem until it is fixed; once fixed, up
// applies everything.
func TestUpRefusesAnAppTableCredgateCannotUse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		table   string // DDL after which the rows are inserted
		then    string // more after the rows
		problem string // in the problem and in up's error
		fix     string // in the problem's fix
		repair  string // makes the table usable; default: fix
	}{{
		name:    "missing platform_user_id",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts DROP COLUMN platform_user_id`,
		problem: "social_accounts has no column platform_user_id",
		fix:     "ALTER TABLE social_accounts ADD COLUMN platform_user_id text",
	}, {
		name:    "missing username",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts DROP COLUMN username`,
		problem: "social_accounts has no column username",
		fix:     "ALTER TABLE social_accounts ADD COLUMN username text",
	}, {
		name:    "missing updated_at",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts DROP COLUMN updated_at`,
		problem: "social_accounts has no column updated_at: credgate sets it on every write",
		fix:     "ALTER TABLE social_accounts ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()",
	}, {
		name:    "no unique (user_id, platform)",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts DROP CONSTRAINT social_accounts_user_platform_key`,
		problem: "social_accounts has no unique constraint on (user_id, platform): credgate's upsert (INSERT … ON CONFLICT (user_id, platform)) needs one",
		fix:     "ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_user_id_platform_key UNIQUE (user_id, platform)",
	}, {
		name:    "a partial unique index on (user_id, platform)",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts DROP CONSTRAINT social_accounts_user_platform_key; CREATE UNIQUE INDEX social_accounts_live ON social_accounts (user_id, platform) WHERE access_token IS NOT NULL`,
		problem: "the unique constraint on social_accounts (user_id, platform) is DEFERRABLE, partial or not yet valid: ON CONFLICT cannot use it",
		fix:     "replace it with a plain one",
		repair:  `ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_user_id_platform_key UNIQUE (user_id, platform)`,
	}, {
		name:    "text id",
		table:   strings.Replace(pgtest.AppTable, "id               uuid PRIMARY KEY DEFAULT gen_random_uuid()", "id text PRIMARY KEY DEFAULT gen_random_uuid()::text", 1),
		problem: `credgate needs a uuid id: social_accounts.id is text, token_refresh_queue references it as uuid (PostgreSQL refuses that foreign key: "cannot be implemented", 42804)`,
		fix:     "ALTER TABLE social_accounts ALTER COLUMN id TYPE uuid USING id::uuid",
		repair:  `ALTER TABLE social_accounts ALTER COLUMN id DROP DEFAULT, ALTER COLUMN id TYPE uuid USING id::uuid, ALTER COLUMN id SET DEFAULT gen_random_uuid()`,
	}, {
		name:    "bigint id",
		table:   strings.Replace(pgtest.AppTable, "id               uuid PRIMARY KEY DEFAULT gen_random_uuid()", "id bigserial PRIMARY KEY", 1),
		problem: "credgate needs a uuid id: social_accounts.id is bigint",
		fix:     "move the key to a uuid column named id (for instance ALTER TABLE social_accounts RENAME COLUMN id TO legacy_id;",
		repair:  `ALTER TABLE social_accounts RENAME COLUMN id TO legacy_id; ALTER TABLE social_accounts ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE`,
	}, {
		// expires_at, status and scopes give way (TestUpAbsorbsTheAppsOwnColumns);
		// credgate's other names do not.
		name:    "the app's own last_refreshed_at",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts ADD COLUMN last_refreshed_at timestamptz`,
		problem: "social_accounts.last_refreshed_at already exists (timestamp with time zone) and is not credgate's",
		fix:     "ALTER TABLE social_accounts RENAME COLUMN last_refreshed_at TO app_last_refreshed_at) and the app's statements with it",
		repair:  `ALTER TABLE social_accounts RENAME COLUMN last_refreshed_at TO app_last_refreshed_at`,
	}, {
		name:    "the app's own credgate_status beside its status",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts ADD COLUMN status text, ADD COLUMN credgate_status text`,
		problem: "social_accounts.credgate_status already exists (text) and is not credgate's",
		fix:     "ALTER TABLE social_accounts RENAME COLUMN credgate_status TO app_credgate_status)",
		repair:  `ALTER TABLE social_accounts RENAME COLUMN credgate_status TO app_credgate_status`,
	}, {
		name:    "access_token NOT NULL",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts ALTER COLUMN access_token SET NOT NULL`,
		problem: "social_accounts.access_token is NOT NULL: credgate leaves it NULL on the accounts it connects",
		fix:     "ALTER TABLE social_accounts ALTER COLUMN access_token DROP NOT NULL",
	}, {
		name:    "an app column NOT NULL without a default",
		table:   pgtest.AppTable + `; ALTER TABLE social_accounts ADD COLUMN display_name text`,
		then:    `UPDATE social_accounts SET display_name = 'someone'; ALTER TABLE social_accounts ALTER COLUMN display_name SET NOT NULL`,
		problem: "social_accounts.display_name is NOT NULL without a default: credgate's insert of a new account does not name it",
		fix:     `ALTER TABLE social_accounts ALTER COLUMN display_name SET DEFAULT`,
		repair:  `ALTER TABLE social_accounts ALTER COLUMN display_name SET DEFAULT ''`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := pgtest.EmptyDatabase(t)
			pgtest.Exec(t, url, tc.table)
			pgtest.Exec(t, url, appRows)
			if tc.then != "" {
				pgtest.Exec(t, url, tc.then)
			}
			columns, dump := pgtest.Columns(t, url), dumpDatabase(t, url)

			for attempt := range 2 {
				_, err := migrations.Up(ctx, url)
				refused, ok := errors.AsType[migrations.ErrAppTable](err)
				if !ok {
					t.Fatalf("attempt %d: up = %v, want ErrAppTable", attempt, err)
				}
				errs := refused.Problems.Errors()
				i := slices.IndexFunc(errs, func(p migrations.Problem) bool { return strings.Contains(p.What, tc.problem) })
				if i < 0 {
					t.Fatalf("no problem %q among %v", tc.problem, errs)
				}
				if !strings.Contains(errs[i].Fix, tc.fix) {
					t.Errorf("fix = %q, want %q in it", errs[i].Fix, tc.fix)
				}
				if len(errs) != 1 {
					t.Errorf("%d problems, want this one only: %v", len(errs), errs)
				}
				msg := err.Error()
				for _, want := range []string{"social_accounts lacks what credgate's statements need (1 problem); nothing was changed.",
					tc.problem, tc.fix, "Then run `caddy credgate migrate up` again."} {
					if !strings.Contains(msg, want) {
						t.Errorf("error lacks %q:\n%s", want, msg)
					}
				}
				if strings.Contains(msg, "\n") || strings.Contains(msg, "SQLSTATE") {
					t.Errorf("error spans lines or comes from a file: %s", msg)
				}
				assertUntouched(t, url, columns, dump)
			}

			s := inspect(t, url)
			if errs := s.AppTable.Errors(); len(errs) != 1 || !strings.Contains(errs[0].What, tc.problem) {
				t.Errorf("status's app table: %v", s.AppTable)
			}

			repair := tc.repair
			if repair == "" {
				repair = tc.fix
			}
			pgtest.Exec(t, url, repair)
			if s := inspect(t, url); len(s.AppTable) != 0 {
				t.Fatalf("after the fix: %v", s.AppTable)
			}
			rep := mustUp(t, url)
			assertComplete(t, rep.After)
			if s := inspect(t, url); len(s.AppTable) != 0 {
				t.Errorf("after up: %v", s.AppTable)
			}
		})
	}
}

// Several problems: one refusal lists every one, numbered, each with its
// fix, so the operator fixes the table in one go.
func TestUpListsEveryProblemInOneError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, `CREATE TABLE social_accounts (
		id bigserial PRIMARY KEY, user_id uuid NOT NULL, platform text NOT NULL,
		access_token text, refresh_token text, expires_at timestamptz, status text, connected_via text)`)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, status) VALUES (gen_random_uuid(), 'x', 'active')`)
	columns, dump := pgtest.Columns(t, url), dumpDatabase(t, url)

	_, err := migrations.Up(ctx, url)
	refused, ok := errors.AsType[migrations.ErrAppTable](err)
	if !ok {
		t.Fatalf("up = %v, want ErrAppTable", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"(7 problems); nothing was changed.",
		"(1) credgate needs a uuid id: social_accounts.id is bigint",
		"(2) social_accounts has no column platform_user_id",
		"(3) social_accounts has no column username",
		"(4) social_accounts has no column created_at",
		"(5) social_accounts has no column updated_at",
		"(6) social_accounts has no unique constraint on (user_id, platform)",
		"(7) social_accounts.connected_via already exists (text) and is not credgate's",
		"Also, not stopping up: social_accounts.expires_at is the app's (timestamp with time zone): credgate's own expiry column is credgate_expires_at",
		"1 row has platform 'x', for which credgate has no provider",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "social_accounts.status") {
		t.Errorf("the app's own status is named as a problem:\n%s", msg)
	}
	if len(refused.Problems.Warnings()) != 2 {
		t.Errorf("warnings: %v", refused.Problems.Warnings())
	}
	assertUntouched(t, url, columns, dump)
}

// A platform name credgate has no provider for (the app stores Twitter
// as "x") is a warning: up goes ahead and says so, status shows it, and
// the schema is complete.
func TestUpWarnsOfPlatformNamesWithoutAProvider(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, pgtest.AppTable)
	pgtest.Exec(t, url, appRows)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform) VALUES
		(gen_random_uuid(), 'x'), (gen_random_uuid(), 'x'), (gen_random_uuid(), 'mastodon')`)

	rep := mustUp(t, url)
	assertComplete(t, rep.After)
	warns := rep.Before.AppTable.Warnings()
	if len(warns) != 2 || len(rep.Before.AppTable.Errors()) != 0 {
		t.Fatalf("up's app table: %v", rep.Before.AppTable)
	}
	if w := warns[0]; !strings.Contains(w.What, "2 rows have platform 'x', for which credgate has no provider (it knows twitter, linkedin, facebook, instagram)") ||
		!strings.Contains(w.Fix, "caddy credgate app-platform-name <platform> x") ||
		!strings.Contains(w.Fix, "configure a provider named 'x' (kind generic)") {
		t.Errorf("warning: %+v", w)
	}
	if !strings.Contains(warns[1].What, "1 row has platform 'mastodon'") {
		t.Errorf("warning: %+v", warns[1])
	}
	s := inspect(t, url)
	if len(s.AppTable.Warnings()) != 2 || len(s.AppTable.Errors()) != 0 {
		t.Errorf("status's app table: %v", s.AppTable)
	}
	// Once the app's name for twitter is set, x is known.
	pgtest.Exec(t, url, `INSERT INTO credgate_settings (name, value) VALUES ('app_platform_names', 'twitter=x')`)
	if s := inspect(t, url); len(s.AppTable.Warnings()) != 1 || !strings.Contains(s.AppTable.Warnings()[0].What, "mastodon") {
		t.Errorf("status's app table with twitter=x: %v", s.AppTable)
	}
	// The catalog-only check (service-health's) does not read rows.
	problems, err := migrations.PreflightCatalog(context.Background(), connect(t, url))
	if err != nil || len(problems) != 0 {
		t.Errorf("catalog preflight: %v %v", problems, err)
	}
}

// The realistic table, with everything an app adds around it (its own
// expiry column, an updated_at trigger, a table of posts referencing the
// accounts, a varchar platform, an id default): no problem, up applies
// everything, status is complete. A fresh database (001 creates the
// table) has no problem either, before and after.
func TestPreflightPassesAGoodAppTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	if problems, err := migrations.Preflight(ctx, connect(t, url)); err != nil || problems != nil {
		t.Errorf("no table: %v %v", problems, err)
	}
	pgtest.Exec(t, url, strings.Replace(pgtest.AppTable, "platform         text NOT NULL", "platform varchar(32) NOT NULL", 1)+`;
		CREATE FUNCTION app_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
		CREATE TRIGGER social_accounts_touch BEFORE UPDATE ON social_accounts
			FOR EACH ROW EXECUTE FUNCTION app_touch_updated_at();
		CREATE TABLE posts (id bigserial PRIMARY KEY, social_account_id uuid NOT NULL REFERENCES social_accounts (id), body text);
		ALTER TABLE social_accounts ADD COLUMN app_note text NOT NULL DEFAULT '', ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY`)
	pgtest.Exec(t, url, appRows)
	if problems, err := migrations.Preflight(ctx, connect(t, url)); err != nil || len(problems) != 0 {
		t.Errorf("good table: %v %v", problems, err)
	}
	rep := mustUp(t, url)
	assertComplete(t, rep.After)
	if len(rep.Before.AppTable) != 0 {
		t.Errorf("up's app table: %v", rep.Before.AppTable)
	}
	if s := inspect(t, url); len(s.AppTable) != 0 {
		t.Errorf("status's app table: %v", s.AppTable)
	}

	fresh := pgtest.Database(t)
	if s := inspect(t, fresh); len(s.AppTable) != 0 {
		t.Errorf("001's own table: %v", s.AppTable)
	}
}

// An id without a default is a warning only: credgate gives new rows
// ids of its own, but its fallback insert names none.
func TestPreflightWarnsOfAnIDWithoutDefault(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, pgtest.AppTable+`; ALTER TABLE social_accounts ALTER COLUMN id DROP DEFAULT`)
	rep := mustUp(t, url)
	assertComplete(t, rep.After)
	warns := rep.Before.AppTable.Warnings()
	if len(warns) != 1 || !strings.Contains(warns[0].What, "social_accounts.id has no default") ||
		warns[0].Fix != "ALTER TABLE social_accounts ALTER COLUMN id SET DEFAULT gen_random_uuid()" {
		t.Errorf("warnings: %v", rep.Before.AppTable)
	}
}

// A view by that name is refused as such.
func TestPreflightRefusesAView(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, `CREATE TABLE accounts (id uuid); CREATE VIEW social_accounts AS SELECT * FROM accounts`)
	_, err := migrations.Up(context.Background(), url)
	if _, ok := errors.AsType[migrations.ErrAppTable](err); !ok || !strings.Contains(err.Error(), "social_accounts is a view, not a table") {
		t.Errorf("up over a view: %v", err)
	}
}
