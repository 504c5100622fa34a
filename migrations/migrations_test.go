package migrations_test

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustUp(t *testing.T, url string) migrations.Report {
	t.Helper()
	rep, err := migrations.Up(context.Background(), url)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	return rep
}

func mustDown(t *testing.T, url string) migrations.Report {
	t.Helper()
	rep, err := migrations.Down(context.Background(), url, migrations.DownOptions{})
	if err != nil {
		t.Fatalf("down: %v", err)
	}
	return rep
}

// assertComplete checks that every object the migration promises exists.
func assertComplete(t testing.TB, s migrations.Schema) {
	t.Helper()
	if latest := fileVersions(t)[len(fileVersions(t))-1]; s.Version != uint(latest) || s.Dirty || s.Failure != nil {
		t.Errorf("version = %d dirty=%v failure=%v, want %d clean", s.Version, s.Dirty, s.Failure, latest)
	}
	if !s.SocialAccounts {
		t.Error("social_accounts missing")
	}
	for _, group := range [][]migrations.Presence{s.Tables, s.Columns, s.AuditColumns, s.RLS} {
		for _, p := range group {
			if !p.Present {
				t.Errorf("%s missing after up", p.Name)
			}
		}
	}
}

func TestUpCreatesEverythingAndTwiceIsNoop(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)

	first := mustUp(t, url)
	assertComplete(t, first.After)
	if got := first.Created(); !slices.Equal(got, migrations.Tables) {
		t.Errorf("created = %v, want %v", got, migrations.Tables)
	}
	if got := first.AddedColumns(); !slices.Equal(got, migrations.AccountColumns) {
		t.Errorf("added columns = %v, want %v", got, migrations.AccountColumns)
	}
	if got := first.RLSEnabled(); !slices.Equal(got, migrations.Tables) {
		t.Errorf("rls enabled = %v, want %v", got, migrations.Tables)
	}

	second := mustUp(t, url)
	if second.Changed() || len(second.Created()) != 0 || len(second.AddedColumns()) != 0 {
		t.Errorf("second up changed something: %+v", second)
	}
	assertComplete(t, second.After)
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	mustUp(t, url)

	down := mustDown(t, url)
	if down.After.Version != 0 {
		t.Errorf("version after down = %d, want 0", down.After.Version)
	}
	if got := down.Dropped(); !slices.Equal(got, migrations.Tables) {
		t.Errorf("dropped = %v, want %v", got, migrations.Tables)
	}
	if got := down.RemovedColumns(); !slices.Equal(got, migrations.AccountColumns) {
		t.Errorf("removed columns = %v, want %v", got, migrations.AccountColumns)
	}
	if !down.After.SocialAccounts {
		t.Error("down dropped the app's social_accounts table")
	}

	again := mustUp(t, url)
	assertComplete(t, again.After)
	if got := again.Created(); !slices.Equal(got, migrations.Tables) {
		t.Errorf("re-up created = %v, want %v", got, migrations.Tables)
	}
}

// The app's table, as it exists before credgate: its rows must come through
// up and down byte for byte.
const legacyTable = `CREATE TABLE social_accounts (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	user_id uuid NOT NULL,
	platform text NOT NULL,
	platform_user_id text,
	username text,
	access_token text,
	refresh_token text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (user_id, platform))`

const legacyRow = `SELECT id::text, user_id::text, platform, platform_user_id, username,
	access_token, refresh_token, created_at::text, updated_at::text FROM social_accounts ORDER BY id`

func legacyRows(t *testing.T, url string) [][]any {
	t.Helper()
	rows, err := connect(t, url).Query(context.Background(), legacyRow)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]any
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	return out
}

func TestLegacyRowsSurviveUpAndDown(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, legacyTable)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, platform_user_id, username, access_token, refresh_token)
		VALUES ('11111111-1111-1111-1111-111111111111', 'twitter', '42', 'alice', 'plain-access-token', 'plain-refresh-token'),
		       ('22222222-2222-2222-2222-222222222222', 'facebook', '43', 'bob', 'fb-access', NULL)`)
	before := legacyRows(t, url)
	if len(before) != 2 {
		t.Fatalf("setup: %d rows", len(before))
	}

	up := mustUp(t, url)
	if slices.Contains(up.Created(), "social_accounts") {
		t.Error("up claims to have created the app's table")
	}
	if got := legacyRows(t, url); !equalRows(got, before) {
		t.Errorf("legacy rows changed by up:\n got %v\nwant %v", got, before)
	}
	// Existing rows describe themselves truthfully under the new columns.
	var via, status string
	var version int64
	err := connect(t, url).QueryRow(context.Background(),
		`SELECT connected_via, status, credentials_version FROM social_accounts WHERE platform = 'twitter'`).Scan(&via, &status, &version)
	if err != nil {
		t.Fatal(err)
	}
	if via != "legacy" || status != "connected" || version != 0 {
		t.Errorf("legacy row reads connected_via=%q status=%q version=%d", via, status, version)
	}

	mustDown(t, url)
	if got := legacyRows(t, url); !equalRows(got, before) {
		t.Errorf("legacy rows changed by down:\n got %v\nwant %v", got, before)
	}
}

func equalRows(a, b [][]any) bool {
	return slices.EqualFunc(a, b, func(x, y []any) bool {
		return slices.EqualFunc(x, y, func(p, q any) bool { return p == q })
	})
}

func TestRowLevelSecurityHidesNewTablesFromOtherRoles(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	conn := connect(t, url)
	ctx := context.Background()

	for _, table := range migrations.Tables {
		var rls bool
		if err := conn.QueryRow(ctx, `SELECT relrowsecurity FROM pg_class WHERE oid = $1::regclass`, table).Scan(&rls); err != nil {
			t.Fatal(err)
		}
		if !rls {
			t.Errorf("row level security is off on %s", table)
		}
	}

	// A role that was granted SELECT still sees no state rows: RLS with no
	// policy shows non-owners nothing.
	if _, err := conn.Exec(ctx, `INSERT INTO oauth_states (state_hash, user_id, platform, redirect_uri)
		VALUES (sha256('s'), gen_random_uuid(), 'twitter', 'https://example.test/cb')`); err != nil {
		t.Fatal(err)
	}
	role := pgx.Identifier{"cgtest_reader_" + randomSuffix(t)}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE ROLE `+role+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pgtest.ServerURL())
		if err == nil {
			defer c.Close(context.Background())
			c.Exec(context.Background(), `DROP ROLE IF EXISTS `+role)
		}
	})
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, stmt := range []string{`GRANT SELECT ON oauth_states TO ` + role, `SET LOCAL ROLE ` + role} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	var visible int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM oauth_states`).Scan(&visible); err != nil {
		t.Fatal(err)
	}
	if visible != 0 {
		t.Errorf("a non-owner role sees %d oauth_states rows, want 0", visible)
	}
	if _, err := tx.Exec(ctx, `RESET ROLE`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `REVOKE ALL ON oauth_states FROM `+role); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUpAppliesOnce(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)

	const runners = 4
	reports := make([]migrations.Report, runners)
	errs := make([]error, runners)
	var wg sync.WaitGroup
	for i := range runners {
		wg.Go(func() { reports[i], errs[i] = migrations.Up(context.Background(), url) })
	}
	wg.Wait()

	applied := 0
	for i := range runners {
		if errs[i] != nil {
			t.Fatalf("runner %d: %v", i, errs[i])
		}
		if len(reports[i].Created()) > 0 {
			applied++
		}
	}
	if applied != 1 {
		t.Errorf("%d runners report creating tables, want exactly 1", applied)
	}
	var rows, version int
	var dirty bool
	err := connect(t, url).QueryRow(context.Background(),
		`SELECT count(*) OVER (), version, dirty FROM `+migrations.VersionTable).Scan(&rows, &version, &dirty)
	if err != nil {
		t.Fatal(err)
	}
	if latest := fileVersions(t)[len(fileVersions(t))-1]; rows != 1 || version != latest || dirty {
		t.Errorf("version table: %d rows, version %d, dirty %v; want one row, %d, clean", rows, version, dirty, latest)
	}
}

// The up file is pasted into the Supabase SQL editor by hand, maybe twice:
// each file must be idempotent on its own, outside the runner.
func TestFilesAreIdempotentWhenRunByHand(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	conn := connect(t, url)
	ctx := context.Background()
	// Every up file twice, every down file twice (newest first), and
	// every up file again.
	var ups, downs []string
	entries, err := fs.ReadDir(migrations.Files(), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch {
		case strings.HasSuffix(e.Name(), ".up.sql"):
			ups = append(ups, e.Name(), e.Name())
		case strings.HasSuffix(e.Name(), ".down.sql"):
			downs = append(downs, e.Name())
		}
	}
	slices.Sort(ups)
	slices.Sort(downs)
	slices.Reverse(downs)
	var once []string
	for i := 0; i < len(ups); i += 2 {
		once = append(once, ups[i])
	}
	for _, name := range slices.Concat(ups, downs, downs, once) {
		sql, err := fs.ReadFile(migrations.Files(), name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, string(sql)); err != nil {
			t.Fatalf("running %s by hand: %v", name, err)
		}
	}
	s, err := migrations.Inspect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range slices.Concat(s.Tables, s.Columns, s.AuditColumns) {
		if !p.Present {
			t.Errorf("%s missing after running the files by hand", p.Name)
		}
	}
}

func TestDownRefusesToDestroyEncryptedOnlyCredentials(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, credentials_encrypted, credentials_key_id, connected_via)
		VALUES (gen_random_uuid(), 'linkedin', '\x01'::bytea, 1, 'credgate')`)
	// A legacy user who reconnected through credgate: the app's old
	// plaintext is still there, but the current tokens are only in the
	// blob. Rolling back would leave the stale legacy token.
	// (A connect records the plaintext it superseded, as seen.)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token, credentials_encrypted, credentials_key_id, connected_via,
			app_token_fingerprint)
		VALUES (gen_random_uuid(), 'twitter', 'old-legacy-access', 'old-legacy-refresh', '\x01'::bytea, 1, 'credgate',
			credgate_app_token_fingerprint('old-legacy-access', 'old-legacy-refresh'))`)
	// Not counted: an account written back (the app's columns hold its
	// current token), one the app wrote a newer token into after a
	// rollback, and one that needs the user anyway.
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token, credentials_encrypted, credentials_key_id, connected_via,
			app_token_fingerprint, app_token_current)
		VALUES (gen_random_uuid(), 'instagram', 'written-back', '\x01'::bytea, 1, 'credgate', credgate_app_token_fingerprint('written-back', NULL), true),
		       (gen_random_uuid(), 'twitter', 'app-newer', '\x01'::bytea, 1, 'credgate', credgate_app_token_fingerprint('older', NULL), false)`)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, credentials_encrypted, credentials_key_id, connected_via, status)
		VALUES (gen_random_uuid(), 'facebook', '\x01'::bytea, 1, 'credgate', 'needs_reauth')`)
	// A legacy row backfilled (or renewed by credgate, which keeps the
	// plaintext in step): plaintext and blob hold the same tokens.
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token, credentials_encrypted, credentials_key_id, connected_via)
		VALUES (gen_random_uuid(), 'facebook', 'same-access', '\x01'::bytea, 1, 'legacy')`)

	_, err := migrations.Down(context.Background(), url, migrations.DownOptions{})
	var refused migrations.ErrWouldDestroyCredentials
	if !errors.As(err, &refused) || refused.Accounts != 2 {
		t.Fatalf("down without force: err = %v, want ErrWouldDestroyCredentials{2}", err)
	}
	s, err := migrations.Inspect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	assertComplete(t, s)

	rep, err := migrations.Down(context.Background(), url, migrations.DownOptions{Force: true})
	if err != nil {
		t.Fatalf("down with force: %v", err)
	}
	if rep.After.Version != 0 || len(rep.Dropped()) != len(migrations.Tables) {
		t.Errorf("forced down left version %d, dropped %v", rep.After.Version, rep.Dropped())
	}
}

// The audit log refuses UPDATE and DELETE, except the two scoped
// exceptions 007 opens with a transaction-local setting (retention and
// erasure), and each of those only within its scope.
func TestAuditLogIsAppendOnly(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	const user = "11111111-1111-1111-1111-111111111111"
	pgtest.Exec(t, url, `INSERT INTO credential_audit_log (created_at, user_id, action, status, details) VALUES
		('2020-01-01', $1, 'connect', 'success', '{"account_id": "a1", "scopes": 2}'),
		('2020-01-03', NULL, 'connect', 'success', '{}'),
		(now(), '22222222-2222-2222-2222-222222222222', 'connect', 'success', '{}')`, user)
	conn := connect(t, url)
	ctx := context.Background()
	inTx := func(setting, value, stmt string) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if setting != "" {
			if _, err := tx.Exec(ctx, `SELECT set_config($1, $2, true)`, setting, value); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	for _, tc := range []struct{ setting, value, stmt string }{
		{"", "", `UPDATE credential_audit_log SET status = 'failed'`},
		{"", "", `DELETE FROM credential_audit_log`},
		{"", "", `UPDATE credential_audit_log SET user_id = NULL`},
		// Retention deletes only rows before its cutoff.
		{"credgate.audit_prune", "2020-01-02", `DELETE FROM credential_audit_log`},
		{"credgate.audit_prune", "not a time", `DELETE FROM credential_audit_log WHERE created_at < '2020-01-02'`},
		// The prune setting opens no UPDATE, the erase setting no DELETE.
		{"credgate.audit_prune", "2030-01-01", `UPDATE credential_audit_log SET user_id = NULL`},
		{"credgate.audit_erase", user, `DELETE FROM credential_audit_log WHERE user_id = '` + user + `'`},
		// Erasure clears only the named user's id, and changes nothing else.
		{"credgate.audit_erase", user, `UPDATE credential_audit_log SET user_id = NULL`},
		{"credgate.audit_erase", user, `UPDATE credential_audit_log SET user_id = NULL, status = 'failed' WHERE user_id = '` + user + `'`},
		{"credgate.audit_erase", user, `UPDATE credential_audit_log SET user_id = NULL, details = '{}' WHERE user_id = '` + user + `'`},
		{"credgate.audit_erase", user, `UPDATE credential_audit_log SET user_id = '33333333-3333-3333-3333-333333333333' WHERE user_id = '` + user + `'`},
	} {
		if err := inTx(tc.setting, tc.value, tc.stmt); err == nil {
			t.Errorf("%s with %s = %q succeeded on the append-only audit log", tc.stmt, tc.setting, tc.value)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE status = 'success' AND (user_id IS NOT NULL OR created_at > '2020-01-02')`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("audit rows after refused edits: %d (%v), want the 3 unchanged", n, err)
	}

	// Within their scope, the two exceptions go through.
	if err := inTx("credgate.audit_erase", user, `UPDATE credential_audit_log SET user_id = NULL, details = details - 'account_id' WHERE user_id = '`+user+`'`); err != nil {
		t.Errorf("erasing the user's id: %v", err)
	}
	if err := inTx("credgate.audit_prune", "2020-01-02T00:00:00Z", `DELETE FROM credential_audit_log WHERE created_at < '2020-01-02'`); err != nil {
		t.Errorf("pruning before the cutoff: %v", err)
	}
	var left int
	var details string
	if err := conn.QueryRow(ctx, `SELECT count(*), min(details::text) FROM credential_audit_log WHERE user_id IS NULL`).Scan(&left, &details); err != nil || left != 1 || details != "{}" {
		t.Errorf("after erase and prune: %d rows without a user id (%s, %v), want the one of 2020-01-03", left, details, err)
	}
	// The setting lasts until the transaction ends.
	if _, err := conn.Exec(ctx, `SELECT set_config('credgate.audit_prune', '2030-01-01', true)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM credential_audit_log`); err == nil {
		t.Error("a prune setting outlived its transaction")
	}
}

// An app whose table already has a column by one of credgate's own names
// (here connected_via) stops the migration with a clear message before
// anything changes; credgate never shares or drops the app's column.
func TestUpRefusesToShareAnAppColumn(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, legacyTable)
	pgtest.Exec(t, url, `ALTER TABLE social_accounts ADD COLUMN connected_via text;
		INSERT INTO social_accounts (user_id, platform, connected_via) VALUES (gen_random_uuid(), 'twitter', 'web')`)
	_, err := migrations.Up(context.Background(), url)
	if err == nil || !strings.Contains(err.Error(), "social_accounts.connected_via already exists (text) and is not credgate's") {
		t.Fatalf("up: %v", err)
	}
	s, err := migrations.Inspect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(s.Tables, s.Columns...) {
		if p.Present {
			t.Errorf("%s was created by a refused migration", p.Name)
		}
	}
}

// The app's own expires_at, status and scopes give way: credgate's
// columns are credgate_expires_at, credgate_status and credgate_scopes,
// with its CHECK and index on them; the app's keep their values and
// rules, up runs again harmlessly, and down leaves them.
func TestUpAbsorbsTheAppsOwnColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, legacyTable)
	pgtest.Exec(t, url, `ALTER TABLE social_accounts ADD COLUMN expires_at date, ADD COLUMN scopes jsonb,
			ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'banned'));
		INSERT INTO social_accounts (user_id, platform, status, scopes, expires_at)
		VALUES (gen_random_uuid(), 'twitter', 'banned', '["a"]', '2030-01-01')`)
	mustUp(t, url)
	mustUp(t, url)
	s, err := migrations.Inspect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range s.Columns {
		if !p.Present {
			t.Errorf("%s missing after up", p.Name)
		}
		names = append(names, p.Name)
	}
	for _, want := range []string{"credgate_expires_at", "credgate_status", "credgate_scopes"} {
		if !slices.Contains(names, want) {
			t.Errorf("status does not list %s: %v", want, names)
		}
	}
	conn := connect(t, url)
	// credgate's CHECK is on its column, the app's on the app's.
	if _, err := conn.Exec(ctx, `UPDATE social_accounts SET credgate_status = 'banned'`); err == nil {
		t.Error("credgate_status took a value outside credgate's")
	}
	if _, err := conn.Exec(ctx, `UPDATE social_accounts SET credgate_status = 'needs_reauth', status = 'active'`); err != nil {
		t.Errorf("each column with its own values: %v", err)
	}
	var def string
	if err := conn.QueryRow(ctx, `SELECT pg_get_indexdef('social_accounts_expires_at_idx'::regclass)`).Scan(&def); err != nil ||
		!strings.Contains(def, "(credgate_expires_at) WHERE (credgate_status = ANY") {
		t.Errorf("the scheduler's index: %s %v", def, err)
	}
	mustDown(t, url)
	var n int
	if err := connect(t, url).QueryRow(ctx, `SELECT count(*) FROM social_accounts
		WHERE status = 'active' AND scopes = '["a"]' AND expires_at = '2030-01-01'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the app's columns after down: %d %v", n, err)
	}
	for _, c := range pgtest.Columns(t, url) {
		if strings.HasPrefix(c, "credgate_") {
			t.Errorf("down left %s", c)
		}
	}
}

// An app column that happens to carry one of credgate's names is the
// app's, not a sign that credgate's schema is in place: status lists
// only columns with credgate's comment.
func TestInspectDoesNotTakeTheAppsColumnForCredgates(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, `CREATE TABLE social_accounts (id uuid PRIMARY KEY, user_id uuid NOT NULL, platform text NOT NULL,
		expires_at timestamptz, status text, UNIQUE (user_id, platform))`)
	s, err := migrations.Inspect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Columns {
		if c.Present {
			t.Errorf("the app's own %s was taken for credgate's", c.Name)
		}
	}
}
