package report_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/vault"
)

const appTableCheck = "app table: what credgate's statements need"

// realisticApp is an app's table before credgate, with its rows.
var realisticApp = pgtest.AppTable + `;
CREATE TABLE posts (id bigserial PRIMARY KEY, social_account_id uuid NOT NULL REFERENCES social_accounts (id), body text);
INSERT INTO social_accounts (user_id, platform, platform_user_id, username, access_token, refresh_token) VALUES
	('00000000-0000-4000-8000-000000000001', 'twitter', '101', 'alice', 'a1', 'r1'),
	('00000000-0000-4000-8000-000000000001', 'linkedin', '102', 'alice', 'a2', NULL)`

// verify runs Verify on url and returns its checks by name, in order.
func verify(t *testing.T, url string) []report.Check {
	t.Helper()
	keys, err := vault.NewKeyring(vault.KeyConfig{MasterKey: vault.NewMasterKey()})
	if err != nil {
		t.Fatal(err)
	}
	checks, err := report.Verify(context.Background(), pgtest.Pool(t, url), url, keys, time.Now(), report.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return checks
}

func find(t *testing.T, checks []report.Check, name string) report.Check {
	t.Helper()
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q among %+v", name, checks)
	return report.Check{}
}

// On a realistic app table that up migrated, the app table check passes
// along with the schema's.
func TestVerifyAppTablePassesOnARealisticTable(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, realisticApp)
	if _, err := migrations.Up(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	checks := verify(t, url)
	if c := find(t, checks, appTableCheck); !c.OK || c.Detail != "social_accounts has the columns, types, uuid key and unique (user_id, platform) credgate's statements use" {
		t.Errorf("app table: %+v", c)
	}
	for _, c := range checks[:3] {
		if !c.OK {
			t.Errorf("%+v", c)
		}
	}
	if len(checks) <= 3 {
		t.Errorf("verify stopped after the schema: %+v", checks)
	}
}

// The user's report: a table that lost what credgate's statements need
// after up (or was migrated by a credgate without the preflight) fails
// the check with every problem and its fix, and verify stops there: the
// other checks would read columns that are not there.
func TestVerifyAppTableFailsWithEveryProblem(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, realisticApp)
	if _, err := migrations.Up(context.Background(), url); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, url, `ALTER TABLE social_accounts DROP COLUMN platform_user_id;
		ALTER TABLE social_accounts DROP CONSTRAINT social_accounts_user_platform_key;
		INSERT INTO social_accounts (user_id, platform) VALUES (gen_random_uuid(), 'x')`)
	checks := verify(t, url)
	c := find(t, checks, appTableCheck)
	for _, want := range []string{
		"(1) social_accounts has no column platform_user_id: credgate writes the account's id at the platform there; fix: ALTER TABLE social_accounts ADD COLUMN platform_user_id text",
		"; (2) social_accounts has no unique constraint on (user_id, platform)",
		"fix: ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_user_id_platform_key UNIQUE (user_id, platform)",
		"; warning: 1 row has platform 'x'",
	} {
		if !strings.Contains(c.Detail, want) {
			t.Errorf("detail lacks %q: %s", want, c.Detail)
		}
	}
	if c.OK || report.Passed(checks) {
		t.Errorf("passed: %+v", checks)
	}
	if len(checks) != 3 {
		t.Errorf("verify went on past a broken app table: %+v", checks)
	}
}

// A warning alone does not fail the check.
func TestVerifyAppTableWarningPasses(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform) VALUES (gen_random_uuid(), 'x')`)
	c := find(t, verify(t, url), appTableCheck)
	if !c.OK || !strings.Contains(c.Detail, "; warning: 1 row has platform 'x', for which credgate has no provider") {
		t.Errorf("app table: %+v", c)
	}
}
