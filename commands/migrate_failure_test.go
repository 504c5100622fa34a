package commands

import (
	"strings"
	"testing"

	"github.com/credgate/credgate/internal/pgtest"
)

// An app with an oauth_states table of its own: `migrate up` fails in
// 001, and both it and `migrate status` say which file, PostgreSQL's
// message, that nothing of it was applied and what to do, never that
// `migrate up` repairs it (it fails the same way until the table is
// renamed). (A column of the app's by one of credgate's names is
// refused earlier, by the preflight: see app_table_test.go.)
func TestMigrateFailureSaysWhatToDo(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, `CREATE TABLE social_accounts (
		id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL, platform text NOT NULL,
		platform_user_id text, username text, access_token text, refresh_token text,
		created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), UNIQUE (user_id, platform));
		CREATE TABLE oauth_states (state text PRIMARY KEY, provider text NOT NULL)`)

	_, err := runCLI(t, "migrate", "up", "--database-url", url)
	if err == nil {
		t.Fatal("up succeeded over the app's oauth_states")
	}
	for _, want := range []string{
		`001_improve_credentials.up.sql failed: column "expires_at" does not exist (SQLSTATE 42703).`,
		"Nothing of 001_improve_credentials.up.sql was applied",
		"Next: do what PostgreSQL's message says, then run `caddy credgate migrate up` again",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("up's error lacks %q:\n%v", want, err)
		}
	}

	out, err := runCLI(t, "migrate", "status", "--database-url", url)
	if err == nil {
		t.Error("status of a failed migration exits 0")
	}
	for _, want := range []string{
		"Applied version: none (dirty: the last run failed, see below)\n",
		"Last run: `caddy credgate migrate up` failed in 001_improve_credentials.up.sql at ",
		`column "expires_at" does not exist`,
		"Nothing of 001_improve_credentials.up.sql was applied: each file runs as one transaction.\n",
		"Next: do what PostgreSQL's message says, then run `caddy credgate migrate up` again: it starts at 001_improve_credentials.up.sql.\n",
		"Schema incomplete: see Next above.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "repairs it") || strings.Contains(out, "Applied version: 1") {
		t.Errorf("status claims version 1 or a repair:\n%s", out)
	}

	pgtest.Exec(t, url, `ALTER TABLE oauth_states RENAME TO app_oauth_states`)
	out, err = runCLI(t, "migrate", "up", "--database-url", url)
	if err != nil || !strings.HasPrefix(out, "✓ Ran again from 001_improve_credentials.up.sql, where the last run had failed\n") {
		t.Errorf("up after the fix: %v\n%s", err, out)
	}
	out, err = runCLI(t, "migrate", "status", "--database-url", url)
	if err != nil || !strings.Contains(out, "(clean)") || strings.Contains(out, "Last run") {
		t.Errorf("status after the fix: %v\n%s", err, out)
	}
}
