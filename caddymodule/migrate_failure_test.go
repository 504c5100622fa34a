package caddymodule

import (
	"strings"
	"testing"

	"github.com/credgate/credgate/internal/pgtest"
)

// An app whose table has its own expires_at: `migrate up` fails in 001,
// and both it and `migrate status` say which file, PostgreSQL's message,
// that nothing of it was applied and what to do, never that `migrate up`
// repairs it (it fails the same way until the column is renamed).
func TestMigrateFailureSaysWhatToDo(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, `CREATE TABLE social_accounts (
		id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL, platform text NOT NULL,
		access_token text, refresh_token text, expires_at timestamptz, UNIQUE (user_id, platform))`)

	_, err := runCLI(t, "migrate", "up", "--database-url", url)
	if err == nil {
		t.Fatal("up succeeded over the app's expires_at")
	}
	for _, want := range []string{
		"001_improve_credentials.up.sql failed: social_accounts.expires_at already exists (timestamp with time zone) and is not credgate's: rename the app's column, then run the migration again (SQLSTATE P0001).",
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
		"social_accounts.expires_at already exists (timestamp with time zone) and is not credgate's",
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

	pgtest.Exec(t, url, `ALTER TABLE social_accounts RENAME COLUMN expires_at TO app_expires_at`)
	out, err = runCLI(t, "migrate", "up", "--database-url", url)
	if err != nil || !strings.HasPrefix(out, "✓ Ran again from 001_improve_credentials.up.sql, where the last run had failed\n") {
		t.Errorf("up after the fix: %v\n%s", err, out)
	}
	out, err = runCLI(t, "migrate", "status", "--database-url", url)
	if err != nil || !strings.Contains(out, "(clean)") || strings.Contains(out, "Last run") {
		t.Errorf("status after the fix: %v\n%s", err, out)
	}
}
