package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
)

// Users of the app in the Supabase project the tests build.
const (
	userA = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	userB = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
)

// The migrations on a database shaped like a Supabase project before
// credgate (pgtest.SupabaseDatabase): every up file's Supabase branch runs,
// twice, and then every down file; the API roles never reach credgate's
// tables, sequences or functions, the app's own policies hold throughout,
// and down leaves the app's schema, policies and grants exactly as they
// were.
func TestSupabaseProject(t *testing.T) {
	t.Parallel()
	url := pgtest.SupabaseDatabase(t)
	conn := connect(t, url)
	ctx := context.Background()

	if _, err := conn.Exec(ctx, `INSERT INTO auth.users (id, email) VALUES ($1, 'a@example.test'), ($2, 'b@example.test')`, userA, userB); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, platform_user_id, access_token, refresh_token) VALUES
			($1, 'twitter', 'a-tw', 'a-access', 'a-refresh'),
			($2, 'twitter', 'b-tw', 'b-access', 'b-refresh')`, userA, userB); err != nil {
		t.Fatal(err)
	}

	before := catalog(t, conn)
	if n := len(matching(before, "policy public.social_accounts.")); n != len(pgtest.SupabaseAppPolicies) {
		t.Fatalf("the app has %d policies on social_accounts, want %d", n, len(pgtest.SupabaseAppPolicies))
	}
	checkAppPolicies(t, conn, "before up")

	// Up runs every file's Supabase branch.
	assertComplete(t, mustUp(t, url).After)
	checkCredgate(t, conn, "after up")
	sameAppObjects(t, before, catalog(t, conn), "after up")

	// Up again: nothing to do for the runner; by hand (the SQL editor),
	// every file and its Supabase branch runs a second time.
	if rep := mustUp(t, url); rep.Changed() {
		t.Error("a second up changed the schema version")
	}
	afterUp := catalog(t, conn)
	runFiles(t, conn, "up")
	if diff := diffCatalogs(afterUp, catalog(t, conn)); diff != "" {
		t.Errorf("running every up file again changed the schema:\n%s", diff)
	}
	checkCredgate(t, conn, "after up twice")

	// Down leaves the project as it was: the app's policies, grants and
	// columns, and nothing of credgate's but golang-migrate's version table.
	mustDown(t, url)
	if diff := diffCatalogs(withoutVersionTable(before), withoutVersionTable(catalog(t, conn))); diff != "" {
		t.Errorf("down did not restore the project:\n%s", diff)
	}
	runFiles(t, conn, "down")
	if diff := diffCatalogs(withoutVersionTable(before), withoutVersionTable(catalog(t, conn))); diff != "" {
		t.Errorf("running every down file again changed the project:\n%s", diff)
	}
	checkAppPolicies(t, conn, "after down")

	// And up again after down.
	assertComplete(t, mustUp(t, url).After)
	checkCredgate(t, conn, "after up, down and up")
	sameAppObjects(t, before, catalog(t, conn), "after up, down and up")
}

// checkCredgate checks everything the Supabase branches promise on a
// migrated project.
func checkCredgate(t *testing.T, conn *pgx.Conn, when string) {
	t.Helper()
	var policies int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_policies
		WHERE schemaname = 'public' AND tablename = 'social_accounts' AND policyname = 'credgate_owner_read'`).Scan(&policies); err != nil {
		t.Fatal(err)
	}
	if policies != 1 {
		t.Fatalf("%s: credgate_owner_read is missing: the Supabase branch did not run", when)
	}
	checkAPIRolesRefused(t, conn, when)
	checkAppPolicies(t, conn, when)
	checkOwnerRead(t, conn, when)
	checkEncryptedColumns(t, conn, when)
	checkServiceRole(t, conn, when)
}

// checkAPIRolesRefused: anon and authenticated (a signed-in user) can do
// nothing with credgate's tables, their sequences or credgate's functions.
func checkAPIRolesRefused(t *testing.T, conn *pgx.Conn, when string) {
	t.Helper()
	ctx := context.Background()
	for _, role := range []string{"anon", "authenticated"} {
		// The runner's version table too: anon setting the version would
		// break the next run.
		for _, table := range append(slices.Clone(migrations.Tables), migrations.VersionTable) {
			for _, priv := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"} {
				var has bool
				if err := conn.QueryRow(ctx, `SELECT has_table_privilege($1, $2, $3)`, role, table, priv).Scan(&has); err != nil {
					t.Fatal(err)
				}
				if has {
					t.Errorf("%s: %s has %s on %s", when, role, priv, table)
				}
			}
		}
		as(t, conn, role, userA, func(tx pgx.Tx) {
			for _, table := range migrations.Tables {
				var column string
				if err := tx.QueryRow(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum = 1`, table).Scan(&column); err != nil {
					t.Fatal(err)
				}
				col := pgx.Identifier{column}.Sanitize()
				tbl := pgx.Identifier{table}.Sanitize()
				for _, stmt := range []string{
					`SELECT * FROM ` + tbl,
					`INSERT INTO ` + tbl + ` DEFAULT VALUES`,
					`UPDATE ` + tbl + ` SET ` + col + ` = ` + col + ` WHERE false`,
					`DELETE FROM ` + tbl + ` WHERE false`,
					`TRUNCATE ` + tbl,
				} {
					if _, err := try(tx, stmt); sqlState(err) != "42501" {
						t.Errorf("%s: %s: %s: got %v, want permission denied (42501)", when, role, stmt, err)
					}
				}
			}
		})
	}

	// The sequences behind credgate's bigserial columns: Supabase grants
	// every new sequence to the API roles too. With them, anon could
	// read how many audit events there were, or setval the sequence back
	// so that every later insert collides.
	rows, err := conn.Query(ctx, `SELECT DISTINCT s.oid::regclass::text FROM pg_class s
		JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
		                AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
		JOIN pg_class tbl ON tbl.oid = d.refobjid
		WHERE s.relkind = 'S' AND tbl.relname = ANY($1) ORDER BY 1`, migrations.Tables)
	if err != nil {
		t.Fatal(err)
	}
	sequences, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(sequences, "credential_audit_log_id_seq") || !slices.Contains(sequences, "token_refresh_queue_id_seq") {
		t.Fatalf("%s: credgate's sequences are %v, want credential_audit_log_id_seq and token_refresh_queue_id_seq among them", when, sequences)
	}
	for _, role := range []string{"anon", "authenticated"} {
		for _, seq := range sequences {
			for _, priv := range []string{"USAGE", "SELECT", "UPDATE"} {
				var has bool
				if err := conn.QueryRow(ctx, `SELECT has_sequence_privilege($1, $2, $3)`, role, seq, priv).Scan(&has); err != nil {
					t.Fatal(err)
				}
				if has {
					t.Errorf("%s: %s has %s on sequence %s", when, role, priv, seq)
				}
			}
		}
		as(t, conn, role, userA, func(tx pgx.Tx) {
			for _, seq := range sequences {
				for _, stmt := range []string{
					`SELECT nextval('` + seq + `')`,
					`SELECT setval('` + seq + `', 1)`,
					`SELECT last_value FROM ` + pgx.Identifier{seq}.Sanitize(),
				} {
					if _, err := try(tx, stmt); sqlState(err) != "42501" {
						t.Errorf("%s: %s: %s: got %v, want permission denied (42501)", when, role, stmt, err)
					}
				}
			}
		})
	}

	// credgate's functions. PostgREST offers every function the role may
	// execute as /rest/v1/rpc/...; a trigger function cannot be called at
	// all, so only the others must be refused.
	rows, err = conn.Query(ctx, `SELECT p.oid::regprocedure::text, p.prorettype = 'trigger'::regtype FROM pg_proc p
		WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'credgate\_%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	type function struct {
		Signature string
		Trigger   bool
	}
	functions, err := pgx.CollectRows(rows, pgx.RowToStructByPos[function])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(functions, func(f function) bool { return strings.HasPrefix(f.Signature, "credgate_app_token_fingerprint(") }) {
		t.Fatalf("%s: credgate's functions are %v, want credgate_app_token_fingerprint among them", when, functions)
	}
	for _, role := range []string{"anon", "authenticated"} {
		for _, f := range functions {
			var has bool
			if err := conn.QueryRow(ctx, `SELECT has_function_privilege($1, $2, 'EXECUTE')`, role, f.Signature).Scan(&has); err != nil {
				t.Fatal(err)
			}
			if has && !f.Trigger {
				t.Errorf("%s: %s may execute %s", when, role, f.Signature)
			}
		}
		as(t, conn, role, userA, func(tx pgx.Tx) {
			if _, err := try(tx, `SELECT credgate_app_token_fingerprint('access', 'refresh')`); sqlState(err) != "42501" {
				t.Errorf("%s: %s calls credgate_app_token_fingerprint: got %v, want permission denied (42501)", when, role, err)
			}
			if _, err := try(tx, `SELECT credgate_audit_log_append_only()`); err == nil {
				t.Errorf("%s: %s called the trigger function credgate_audit_log_append_only", when, role)
			}
		})
	}
}

// checkAppPolicies: the app's own policies on social_accounts decide what
// a user and anon may do, with or without credgate.
func checkAppPolicies(t *testing.T, conn *pgx.Conn, when string) {
	t.Helper()
	as(t, conn, "authenticated", userA, func(tx pgx.Tx) {
		if got := platformsOf(t, tx); !slices.Equal(got, []string{userA + " twitter"}) {
			t.Errorf("%s: user A reads %v, want only their own account", when, got)
		}
		if n, err := try(tx, `INSERT INTO social_accounts (user_id, platform, access_token) VALUES ($1, 'linkedin', 'a-li')`, userA); err != nil || n != 1 {
			t.Errorf("%s: user A adds their own account: %d rows, %v", when, n, err)
		}
		if _, err := try(tx, `INSERT INTO social_accounts (user_id, platform, access_token) VALUES ($1, 'linkedin', 'forged')`, userB); sqlState(err) != "42501" {
			t.Errorf("%s: user A adds an account for user B: got %v, want the app's policy to refuse (42501)", when, err)
		}
		if n, err := try(tx, `UPDATE social_accounts SET username = 'a' WHERE user_id = $1`, userA); err != nil || n != 2 {
			t.Errorf("%s: user A changes their own accounts: %d rows, %v; want 2", when, n, err)
		}
		if n, err := try(tx, `UPDATE social_accounts SET access_token = 'stolen' WHERE user_id = $1`, userB); err != nil || n != 0 {
			t.Errorf("%s: user A changes user B's account: %d rows, %v; want 0", when, n, err)
		}
		if _, err := try(tx, `UPDATE social_accounts SET user_id = $1 WHERE user_id = $2 AND platform = 'linkedin'`, userB, userA); sqlState(err) != "42501" {
			t.Errorf("%s: user A gives an account to user B: got %v, want the app's policy to refuse (42501)", when, err)
		}
		if n, err := try(tx, `DELETE FROM social_accounts WHERE user_id = $1`, userB); err != nil || n != 0 {
			t.Errorf("%s: user A deletes user B's account: %d rows, %v; want 0", when, n, err)
		}
		if n, err := try(tx, `DELETE FROM social_accounts WHERE user_id = $1 AND platform = 'linkedin'`, userA); err != nil || n != 1 {
			t.Errorf("%s: user A deletes their own account: %d rows, %v; want 1", when, n, err)
		}
	})
	as(t, conn, "anon", "", func(tx pgx.Tx) {
		if got := platformsOf(t, tx); len(got) != 0 {
			t.Errorf("%s: anon reads %v, want nothing", when, got)
		}
		if _, err := try(tx, `INSERT INTO social_accounts (user_id, platform) VALUES ($1, 'linkedin')`, userA); sqlState(err) != "42501" {
			t.Errorf("%s: anon adds an account: got %v, want the app's policy to refuse (42501)", when, err)
		}
		if n, err := try(tx, `UPDATE social_accounts SET access_token = 'stolen'`); err != nil || n != 0 {
			t.Errorf("%s: anon changes accounts: %d rows, %v; want 0", when, n, err)
		}
		if n, err := try(tx, `DELETE FROM social_accounts`); err != nil || n != 0 {
			t.Errorf("%s: anon deletes accounts: %d rows, %v; want 0", when, n, err)
		}
	})
}

// checkOwnerRead: credgate_owner_read on its own shows a user their own
// accounts and no one else's, as the app's select policy does; with
// neither, a user reads nothing (so the two checks above mean something).
func checkOwnerRead(t *testing.T, conn *pgx.Conn, when string) {
	t.Helper()
	appRead := pgx.Identifier{pgtest.SupabaseAppPolicies[0]}.Sanitize()
	for _, c := range []struct {
		drop []string
		want []string
	}{
		{drop: []string{appRead}, want: []string{userA + " twitter"}},
		{drop: []string{"credgate_owner_read"}, want: []string{userA + " twitter"}},
		{drop: []string{appRead, "credgate_owner_read"}, want: nil},
	} {
		var drops []string
		for _, p := range c.drop {
			drops = append(drops, `DROP POLICY `+p+` ON social_accounts`)
		}
		as(t, conn, "authenticated", userA, func(tx pgx.Tx) {
			if got := platformsOf(t, tx); !slices.Equal(got, c.want) {
				t.Errorf("%s: without %v, user A reads %v, want %v", when, c.drop, got, c.want)
			}
		}, drops...)
	}
}

// checkEncryptedColumns: what the API roles can read of the ciphertext.
// oauth_states (the encrypted PKCE verifier) is refused outright (see
// checkAPIRolesRefused). credentials_encrypted on social_accounts is not
// revoked (docs/schema.md says why): a user reads their own row's blob,
// through the app's policy or credgate_owner_read, never another user's,
// and anon reads none.
func checkEncryptedColumns(t *testing.T, conn *pgx.Conn, when string) {
	t.Helper()
	ctx := context.Background()
	var has bool
	if err := conn.QueryRow(ctx, `SELECT has_column_privilege('authenticated', 'social_accounts', 'credentials_encrypted', 'SELECT')`).Scan(&has); err != nil {
		t.Fatal(err)
	}
	if !has {
		t.Errorf("%s: authenticated may not select credentials_encrypted: docs/schema.md says it may (the app's table grant)", when)
	}
	blobA, blobB := []byte("sealed-for-a\x00\x01\x02"), []byte("sealed-for-b\x00\x01\x02")
	setBlobs := `UPDATE social_accounts SET credentials_encrypted = CASE user_id WHEN '` + userA + `' THEN '\x` +
		fmt.Sprintf("%x", blobA) + `'::bytea ELSE '\x` + fmt.Sprintf("%x", blobB) + `'::bytea END, credentials_key_id = 1`
	as(t, conn, "authenticated", userA, func(tx pgx.Tx) {
		rows, err := tx.Query(ctx, `SELECT credentials_encrypted FROM social_accounts`)
		if err != nil {
			t.Fatal(err)
		}
		blobs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			t.Fatal(err)
		}
		if len(blobs) != 1 || string(blobs[0]) != string(blobA) {
			t.Errorf("%s: user A reads ciphertexts %q, want only their own %q", when, blobs, blobA)
		}
	}, setBlobs)
	as(t, conn, "anon", "", func(tx pgx.Tx) {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(credentials_encrypted) FROM social_accounts`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: anon reads %d ciphertexts, want none", when, n)
		}
	}, setBlobs)
}

// checkServiceRole: service_role (BYPASSRLS, Supabase's default grants)
// reads every row of every credgate table and of social_accounts.
func checkServiceRole(t *testing.T, conn *pgx.Conn, when string) {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `
		INSERT INTO oauth_states (state_hash, user_id, platform, code_verifier_encrypted, redirect_uri)
			VALUES (sha256('state'), '`+userA+`', 'twitter', '\x0102', 'https://app.example.test/cb');
		INSERT INTO credential_audit_log (user_id, platform, action, status) VALUES ('`+userA+`', 'twitter', 'connect', 'success');
		INSERT INTO token_refresh_queue (social_account_id) SELECT id FROM social_accounts WHERE user_id = '`+userA+`';
		INSERT INTO encryption_keys (id, fingerprint) VALUES (1, sha256('key'));
		INSERT INTO credgate_settings (name, value) VALUES ('transition_mode', 'off');
		INSERT INTO renewal_leases (account_id, owner, until) VALUES ('a', 'replica-1', now() + interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	tables := append([]string{"social_accounts"}, migrations.Tables...)
	owner := map[string]int{}
	for _, table := range tables {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		owner[table] = n
	}
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE service_role`); err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
			t.Errorf("%s: service_role reads %s: %v", when, table, err)
			continue
		}
		if n != owner[table] {
			t.Errorf("%s: service_role reads %d rows of %s, the owner %d", when, n, table, owner[table])
		}
	}
	for _, table := range []string{"social_accounts", "oauth_states", "credential_audit_log", "token_refresh_queue", "encryption_keys", "credgate_settings", "renewal_leases"} {
		if owner[table] == 0 {
			t.Errorf("%s: no rows in %s to read: the check above proves nothing for it", when, table)
		}
	}
}

// as runs fn in a transaction, rolled back afterwards, as role with the
// request's JWT sub claim set to sub (as PostgREST does for a signed-in
// user); setup runs first, as the owner.
func as(t *testing.T, conn *pgx.Conn, role, sub string, fn func(tx pgx.Tx), setup ...string) {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, s := range setup {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claim.sub', $1, true)`, sub); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	fn(tx)
}

// try runs one statement in a savepoint, so that a refusal leaves tx
// usable, and returns the rows it affected.
func try(tx pgx.Tx, sql string, args ...any) (int64, error) {
	ctx := context.Background()
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}
	tag, err := sp.Exec(ctx, sql, args...)
	if err != nil {
		sp.Rollback(ctx)
		return 0, err
	}
	return tag.RowsAffected(), sp.Commit(ctx)
}

func sqlState(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code
	}
	return ""
}

// platformsOf lists the accounts the transaction's role can see.
func platformsOf(t *testing.T, tx pgx.Tx) []string {
	t.Helper()
	rows, err := tx.Query(context.Background(), `SELECT user_id || ' ' || platform FROM social_accounts ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// runFiles runs every embedded file of direction by hand, in the order
// the runner would, as an operator pasting them into the SQL editor does.
func runFiles(t *testing.T, conn *pgx.Conn, direction string) {
	t.Helper()
	versions := fileVersions(t)
	if direction == "down" {
		slices.Reverse(versions)
	}
	for _, v := range versions {
		name := fileOf(t, v, direction)
		sql, err := fs.ReadFile(migrations.Files(), name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(context.Background(), string(sql)); err != nil {
			t.Fatalf("running %s by hand: %v", name, err)
		}
	}
}

// catalog describes, one entry per object, everything in the public and
// auth schemas that decides what a role may do: schemas and their
// privileges, default privileges, relations (tables, sequences, indexes)
// with owner, privileges and row level security, columns with their
// privileges, policies, functions with their privileges, triggers and
// constraints.
func catalog(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	const acl = `coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(%s) a), 'default')`
	rows, err := conn.Query(context.Background(), fmt.Sprintf(`
		SELECT 'schema ' || n.nspname, 'owner=' || pg_get_userbyid(n.nspowner) || ' acl=' || `+acl+`
		FROM pg_namespace n WHERE n.nspname IN ('public', 'auth')
		UNION ALL
		SELECT 'default acl ' || pg_get_userbyid(d.defaclrole) || ' ' || coalesce(d.defaclnamespace::regnamespace::text, '*') || ' ' || d.defaclobjtype::text,
		       `+acl+`
		FROM pg_default_acl d
		UNION ALL
		SELECT 'relation ' || n.nspname || '.' || c.relname,
		       'kind=' || c.relkind::text || ' owner=' || pg_get_userbyid(c.relowner) || ' acl=' || `+acl+` ||
		       ' rls=' || c.relrowsecurity || ' force=' || c.relforcerowsecurity ||
		       coalesce(' ' || pg_get_indexdef(i.indexrelid), '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid
		WHERE n.nspname IN ('public', 'auth')
		UNION ALL
		SELECT 'column ' || n.nspname || '.' || c.relname || '.' || a.attname,
		       format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull ||
		       ' default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '') || ' acl=' || `+acl+` ||
		       ' comment=' || coalesce(col_description(c.oid, a.attnum), '')
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
		WHERE n.nspname IN ('public', 'auth') AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT 'policy ' || p.schemaname || '.' || p.tablename || '.' || p.policyname,
		       p.permissive || ' ' || p.cmd || ' to=' || p.roles::text || ' using=' || coalesce(p.qual, '') || ' check=' || coalesce(p.with_check, '')
		FROM pg_policies p WHERE p.schemaname IN ('public', 'auth')
		UNION ALL
		SELECT 'function ' || p.oid::regprocedure::text,
		       'owner=' || pg_get_userbyid(p.proowner) || ' acl=' || `+acl+` || ' body=' || md5(pg_get_functiondef(p.oid))
		FROM pg_proc p WHERE p.pronamespace IN ('public'::regnamespace, 'auth'::regnamespace)
		UNION ALL
		SELECT 'trigger ' || tg.tgrelid::regclass::text || '.' || tg.tgname, pg_get_triggerdef(tg.oid)
		FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
		WHERE c.relnamespace IN ('public'::regnamespace, 'auth'::regnamespace) AND NOT tg.tgisinternal
		UNION ALL
		SELECT 'constraint ' || co.conrelid::regclass::text || '.' || co.conname, pg_get_constraintdef(co.oid) || ' valid=' || co.convalidated
		FROM pg_constraint co WHERE co.connamespace IN ('public'::regnamespace, 'auth'::regnamespace)`,
		"n.nspacl", "d.defaclacl", "c.relacl", "a.attacl", "p.proacl"))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// matching is the part of a catalog whose keys start with prefix.
func matching(c map[string]string, prefix string) map[string]string {
	out := map[string]string{}
	for k, v := range c {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// withoutVersionTable drops golang-migrate's version table (and its
// columns and key) from a catalog: down keeps it, as golang-migrate does.
func withoutVersionTable(c map[string]string) map[string]string {
	out := maps.Clone(c)
	for k := range out {
		if strings.Contains(k, migrations.VersionTable) {
			delete(out, k)
		}
	}
	return out
}

// sameAppObjects: every object the project had before credgate is as it
// was (credgate only adds: columns, indexes, constraints, its tables and
// credgate_owner_read).
func sameAppObjects(t *testing.T, before, after map[string]string, when string) {
	t.Helper()
	kept := map[string]string{}
	for k := range before {
		if v, ok := after[k]; ok {
			kept[k] = v
		}
	}
	if diff := diffCatalogs(before, kept); diff != "" {
		t.Errorf("%s, the app's objects changed:\n%s", when, diff)
	}
	for k := range matching(after, "policy ") {
		if _, ok := before[k]; !ok && k != "policy public.social_accounts.credgate_owner_read" {
			t.Errorf("%s: a new policy %s", when, k)
		}
	}
}

// diffCatalogs lists, one per line, what differs between two catalogs.
func diffCatalogs(want, got map[string]string) string {
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		switch g, ok := got[k]; {
		case !ok:
			lines = append(lines, "  missing: "+k+": "+want[k])
		case g != want[k]:
			lines = append(lines, "  changed: "+k+":\n    was "+want[k]+"\n    now "+g)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			lines = append(lines, "  extra:   "+k+": "+got[k])
		}
	}
	return strings.Join(lines, "\n")
}
