package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
	"github.com/credgate/credgate/report"
	"github.com/credgate/credgate/vault"
)

// reportedTable is the table from the report (issue 24): no
// platform_user_id, username or updated_at, no unique (user_id,
// platform). Yesterday `migrate up` called it complete and every
// connect failed with storage_unavailable.
const reportedTable = `CREATE TABLE social_accounts (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL, platform text NOT NULL,
	access_token text, refresh_token text, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO social_accounts (user_id, platform, access_token) VALUES (gen_random_uuid(), 'twitter', 'a1')`

// credgateObjects lists the tables of credgate's that exist, the version
// table included, and social_accounts' columns.
func credgateObjects(t *testing.T, url string) (tables, columns []string) {
	t.Helper()
	pool := pgtest.Pool(t, url)
	rows, err := pool.Query(context.Background(), `SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL`,
		append(slices.Clone(migrations.Tables), migrations.VersionTable))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	return tables, pgtest.Columns(t, url)
}

// `migrate up` refuses the reported table with one line naming every
// problem and its fix and changes nothing; `migrate status` lists them
// and exits 1; once the table is fixed, up applies everything and a
// platform name credgate has no provider for is a warning only.
func TestMigrateUpRefusesAnAppTableCredgateCannotUse(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, reportedTable)
	_, columnsBefore := credgateObjects(t, url)

	out, err := runCLI(t, "migrate", "up", "--database-url", url)
	if err == nil {
		t.Fatalf("up accepted the table:\n%s", out)
	}
	msg := err.Error()
	if out != "Error: "+msg+"\n" {
		t.Errorf("up printed more than its one error line:\n%s", out)
	}
	for _, want := range []string{
		"social_accounts lacks what credgate's statements need (4 problems); nothing was changed.",
		"(1) social_accounts has no column platform_user_id: credgate writes the account's id at the platform there; fix: ALTER TABLE social_accounts ADD COLUMN platform_user_id text.",
		"(2) social_accounts has no column username: credgate writes the account's name at the platform there; fix: ALTER TABLE social_accounts ADD COLUMN username text.",
		"(3) social_accounts has no column updated_at: credgate sets it on every write; fix: ALTER TABLE social_accounts ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now().",
		"(4) social_accounts has no unique constraint on (user_id, platform): credgate's upsert (INSERT … ON CONFLICT (user_id, platform)) needs one, and without it every connect fails; fix: ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_user_id_platform_key UNIQUE (user_id, platform)",
		"Then run `caddy credgate migrate up` again.",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("up's error lacks %q:\n%s", want, msg)
		}
	}
	if tables, columns := credgateObjects(t, url); len(tables) > 0 || !slices.Equal(columns, columnsBefore) {
		t.Errorf("a refused up changed the database: tables %v, columns %v", tables, columns)
	}

	out, err = runCLI(t, "migrate", "status", "--database-url", url)
	if err == nil || !strings.Contains(err.Error(), "the schema is incomplete: social_accounts lacks what credgate's statements need (see above)") {
		t.Errorf("status: %v", err)
	}
	for _, want := range []string{
		"The app's social_accounts (what credgate's statements need):\n",
		"  ✗ social_accounts has no column platform_user_id: credgate writes the account's id at the platform there\n      fix: ALTER TABLE social_accounts ADD COLUMN platform_user_id text\n",
		"  ✗ social_accounts has no unique constraint on (user_id, platform)",
		"Schema incomplete: social_accounts lacks what credgate's statements need (4 problems above); fix the table, then run `caddy credgate migrate up`.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Schema complete") {
		t.Errorf("status calls it complete:\n%s", out)
	}

	pgtest.Exec(t, url, `ALTER TABLE social_accounts ADD COLUMN platform_user_id text, ADD COLUMN username text,
		ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
		ADD CONSTRAINT social_accounts_user_id_platform_key UNIQUE (user_id, platform);
		INSERT INTO social_accounts (user_id, platform) VALUES (gen_random_uuid(), 'x')`)
	out, err = runCLI(t, "migrate", "up", "--database-url", url)
	if err != nil {
		t.Fatalf("up after the fix: %v\n%s", err, out)
	}
	for _, want := range []string{
		"! social_accounts: 1 row has platform 'x', for which credgate has no provider (it knows twitter, linkedin, facebook, instagram)",
		"    fix: if it is the app's name for one of credgate's platforms, say so: caddy credgate app-platform-name <platform> x (after migrate up); otherwise configure a provider named 'x' (kind generic)\n",
		"✓ Schema at version 9\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("up lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "migrate", "status", "--database-url", url)
	if err != nil || !strings.Contains(out, "  ✓ columns, types, uuid key and unique (user_id, platform) in place\n  ! 1 row has platform 'x'") ||
		!strings.HasSuffix(out, "Schema complete.\n") {
		t.Errorf("status after the fix: %v\n%s", err, out)
	}
}

// A realistic app table (its own expiry column, an updated_at trigger,
// posts referencing the accounts): up, status and verify all pass.
// Not parallel: verify reads keys from the environment.
func TestMigrateAndVerifyPassOnARealisticAppTable(t *testing.T) {
	t.Setenv(vault.EnvMasterKey, testKey(1))
	t.Setenv(vault.EnvPreviousKeys, "")
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, `CREATE TABLE social_accounts (
		id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
		user_id          uuid NOT NULL,
		platform         varchar(32) NOT NULL,
		platform_user_id text,
		username         text,
		access_token     text,
		refresh_token    text,
		token_expires_at timestamptz,
		created_at       timestamptz NOT NULL DEFAULT now(),
		updated_at       timestamptz NOT NULL DEFAULT now(),
		CONSTRAINT social_accounts_user_platform_key UNIQUE (user_id, platform));
	CREATE FUNCTION app_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
	CREATE TRIGGER social_accounts_touch BEFORE UPDATE ON social_accounts
		FOR EACH ROW EXECUTE FUNCTION app_touch_updated_at();
	CREATE TABLE posts (id bigserial PRIMARY KEY, social_account_id uuid NOT NULL REFERENCES social_accounts (id), body text)`)
	if out, err := runCLI(t, "migrate", "up", "--database-url", url); err != nil || strings.Contains(out, "!") {
		t.Fatalf("up: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "migrate", "status", "--database-url", url); err != nil || !strings.HasSuffix(out, "Schema complete.\n") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err := runCLI(t, "verify", "--min-samples", "20", "--platforms", "twitter,linkedin", "--database-url", healthyDatabaseOn(t, url))
	if err != nil || !strings.Contains(out, "✓ app table: what credgate's statements need: social_accounts has the columns") ||
		!strings.Contains(out, "All 13 checks passed.") {
		t.Errorf("verify: %v\n%s", err, out)
	}
}

// expireAppTableChecks makes the next service-health read the preflight
// again, as it does every report.AppTableEvery.
func expireAppTableChecks() {
	appTableChecks.Range(func(_, v any) bool {
		v.(*report.AppTable).Expire()
		return true
	})
}

// service-health answers 503 while the app's table lacks what credgate's
// statements need (the report: a connect ends in storage_unavailable,
// and service-health said ok), names each problem with its fix, and
// reads the catalog at most every 30 s.
func TestServiceHealthFailsOnAnAppTableCredgateCannotUse(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	admin := map[string]string{"Authorization": "Bearer " + adminToken}
	type health struct {
		OK     bool `json:"ok"`
		Schema struct {
			OK        bool                 `json:"ok"`
			Every     string               `json:"every"`
			CheckedAt *time.Time           `json:"checked_at"`
			Problems  []migrations.Problem `json:"problems"`
			Error     string               `json:"error"`
		} `json:"schema"`
	}
	get := func() (int, health, string) {
		t.Helper()
		start := time.Now()
		resp, body := h.do("GET", "/api/credentials/service-health", "", admin)
		if took := time.Since(start); took > time.Second {
			t.Errorf("service-health took %s", took)
		}
		var v health
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("service-health: %v %s", err, body)
		}
		return resp.StatusCode, v, string(body)
	}

	code, v, body := get()
	if code != 200 || !v.OK || !v.Schema.OK || v.Schema.CheckedAt == nil || v.Schema.Every != "30s" || len(v.Schema.Problems) != 0 {
		t.Fatalf("a usable table: %d %s", code, body)
	}

	pgtest.Exec(t, h.db, `ALTER TABLE social_accounts DROP COLUMN platform_user_id`)
	if loc := h.connect(alice, "twitter"); !strings.Contains(loc, "oauth_error=storage_unavailable") {
		t.Fatalf("a connect on the broken table: %s", loc)
	}
	// Within 30 s of the last read, service-health answers from it.
	if code, _, body := get(); code != 200 {
		t.Errorf("service-health read the catalog again within 30 s: %d %s", code, body)
	}

	expireAppTableChecks()
	code, v, body = get()
	if code != 503 || v.OK || v.Schema.OK || len(v.Schema.Problems) != 1 ||
		v.Schema.Problems[0].What != "social_accounts has no column platform_user_id: credgate writes the account's id at the platform there" ||
		v.Schema.Problems[0].Fix != "ALTER TABLE social_accounts ADD COLUMN platform_user_id text" ||
		!strings.Contains(v.Schema.Error, "every connect fails until it is fixed") {
		t.Errorf("the broken table: %d %s", code, body)
	}

	pgtest.Exec(t, h.db, v.Schema.Problems[0].Fix)
	expireAppTableChecks()
	if code, v, body := get(); code != 200 || !v.Schema.OK {
		t.Errorf("after the fix: %d %s", code, body)
	}
	if loc := h.connect(alice, "twitter"); strings.Contains(loc, "oauth_error") {
		t.Errorf("a connect after the fix: %s", loc)
	}
}

// clashingTable is an app's social_accounts with columns of its own by
// three of credgate's names, of its own types and rules (a status with
// the app's values, NOT NULL; scopes as a comma-separated string), and
// X stored as "x".
const clashingTable = `CREATE TABLE social_accounts (
	id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	user_id          uuid NOT NULL,
	platform         text NOT NULL,
	platform_user_id text,
	username         text,
	access_token     text,
	refresh_token    text,
	expires_at       timestamptz,
	status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
	scopes           text,
	created_at       timestamptz NOT NULL DEFAULT now(),
	updated_at       timestamptz NOT NULL DEFAULT now(),
	UNIQUE (user_id, platform));
INSERT INTO social_accounts (user_id, platform, access_token, refresh_token, expires_at, status, scopes) VALUES
	('` + carol + `', 'x', 'carols-token', 'carols-refresh', now() + interval '90 minutes', 'active', 'tweet.read,tweet.write'),
	('` + bob + `', 'linkedin', 'daves-token', NULL, now() + interval '50 days', 'inactive', 'w_member_social')`

// An app table with its own expires_at, status and scopes (and "x" for
// twitter) is absorbed, not refused: migrate up gives credgate's columns
// credgate_ names and the app's stay as they are; every path then works
// on it (connects on all four platforms, the token API, a renewal,
// egress, disconnect, backfill from the app's expiry, the scheduler,
// verify, service-health, metrics); and migrate down removes only what
// credgate added.
// Not parallel: verify reads keys from the environment.
func TestTheGatewayWorksOnAnAppTableWithItsOwnExpiresAtStatusAndScopes(t *testing.T) {
	t.Setenv(vault.EnvMasterKey, testKey(1))
	t.Setenv(vault.EnvPreviousKeys, "")
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, clashingTable)
	appColumns := `SELECT user_id::text || ' ' || platform || ' ' || coalesce(access_token, '-') || ' ' || status || ' ' ||
		coalesce(scopes, '-') || ' ' || coalesce(to_char(expires_at, 'YYYY-MM-DD'), '-') FROM social_accounts ORDER BY 1`
	before := stringsOn(t, url, appColumns)

	out, err := runCLI(t, "migrate", "up", "--database-url", url)
	if err != nil || !strings.Contains(out, "credgate_expires_at, credgate_status") || !strings.Contains(out, "credgate_scopes") {
		t.Fatalf("up: %v\n%s", err, out)
	}
	if !strings.Contains(out, "app-expiry-column expires_at") {
		t.Errorf("up does not say how to have credgate read the app's expires_at:\n%s", out)
	}
	if out, err := runCLI(t, "migrate", "status", "--database-url", url); err != nil || !strings.HasSuffix(out, "Schema complete.\n") ||
		!strings.Contains(out, "✓ credgate_status") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"app-platform-name", "twitter", "x"}, {"app-expiry-column", "expires_at"}} {
		if out, err := runCLI(t, append(args, "--database-url", url)...); err != nil {
			t.Fatalf("%s: %v\n%s", args[0], err, out)
		}
	}
	if out, err := runCLI(t, "app-expiry-column", "credgate_expires_at", "--database-url", url); err == nil {
		t.Errorf("app-expiry-column accepted credgate's own column:\n%s", out)
	}
	if after := stringsOn(t, url, appColumns); !slices.Equal(before, after) {
		t.Fatalf("up changed the app's columns:\n%v\n%v", before, after)
	}

	// Backfill takes the app's expiry into credgate's column.
	if out, err := runCLI(t, "backfill", "--database-url", url); err != nil {
		t.Fatalf("backfill: %v\n%s", err, out)
	}
	if n := countOn(t, url, `SELECT count(*) FROM social_accounts WHERE credentials_encrypted IS NOT NULL
		AND credgate_expires_at = expires_at AND credgate_status = 'connected'`); n != 2 {
		t.Fatalf("%d backfilled rows carry the app's expiry in credgate_expires_at, want 2", n)
	}

	h := newHarness(t, harnessOptions{databaseURL: url, metrics: true,
		tokenAPI: "service_token " + serviceToken, egress: "service_token " + serviceToken})
	for p := range postPaths {
		if loc := h.connect(alice, p); strings.Contains(loc, "oauth_error") {
			t.Fatalf("connect %s: %s", p, loc)
		}
	}
	if n := h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND credgate_status = 'connected'
		AND credgate_expires_at > now() AND (credgate_scopes IS NOT NULL OR platform = 'facebook') AND status = 'active' AND scopes IS NULL
		AND platform IN ('x', 'linkedin', 'facebook', 'instagram')`, alice); n != 4 {
		t.Fatalf("%d of alice's 4 rows as expected (credgate's columns set, the app's at their defaults): %v", n,
			stringsOn(t, url, `SELECT platform || ' ' || credgate_status || ' ' || coalesce(credgate_expires_at::text, '-') || ' ' ||
				coalesce(array_to_string(credgate_scopes, ','), '-') || ' ' || status || ' ' || coalesce(scopes, '-') FROM social_accounts WHERE user_id = '`+alice+`'`))
	}
	code, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || !h.worksAtSandbox("twitter", tok.AccessToken) {
		t.Fatalf("token API: %d %s", code, body)
	}
	before2 := h.sandbox.Stats()["twitter"].Refreshes
	h.sandbox.Clock().Advance(117 * time.Minute)
	code, renewed, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || renewed.AccessToken == tok.AccessToken || h.sandbox.Stats()["twitter"].Refreshes != before2+1 {
		t.Fatalf("renewal: %d %s", code, body)
	}
	for p, path := range postPaths {
		if code, body := h.egressCall("POST", path+"?fields=id", alice, serviceToken, `{"text":"hello"}`); code/100 != 2 {
			t.Fatalf("egress %s: %d %s", p, code, body)
		}
	}
	if resp, body := h.do("DELETE", "/api/credentials/facebook/disconnect", alice, map[string]string{"Origin": h.origin}); resp.StatusCode != http.StatusOK {
		t.Fatalf("disconnect: %d %s", resp.StatusCode, body)
	}
	if n := h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND platform = 'facebook'
		AND credgate_status = 'disconnected' AND credgate_expires_at IS NULL AND status = 'active'`, alice); n != 1 {
		t.Fatal("the disconnect did not mark credgate's status (or touched the app's)")
	}
	resp, body := h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("service-health: %d %s", resp.StatusCode, body)
	}
	if got := metricValue(h.scrape(), "credgate_accounts", `platform="twitter"`, `status="connected"`); got != 2 {
		t.Errorf("credgate_accounts{twitter,connected} = %v, want 2 (alice's and carol's)", got)
	}
	// The back end reads through credgate (its reads are flushed every
	// second), the plaintext is purged: verify passes whole.
	if out, err := runCLI(t, "backfill", "--purge-plaintext", "--database-url", url); err != nil {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	waitUntil(t, 10*time.Second, func() bool { return h.count(`SELECT count(DISTINCT platform) FROM backend_reads`) == 4 })
	if out, err := runCLI(t, "verify", "--min-samples", "1", "--database-url", url); err != nil || !strings.Contains(out, "All 15 checks passed.") {
		t.Errorf("verify: %v\n%s", err, out)
	}

	// The way back: write-back gives the app its tokens again, so down
	// needs no --force; credgate's columns go, the app's stay.
	if out, err := runCLI(t, "writeback", "--all", "--database-url", url); err != nil {
		t.Fatalf("writeback: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "migrate", "down", "--database-url", url); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	cols := pgtest.Columns(t, url)
	for _, c := range []string{"credgate_expires_at", "credgate_status", "credgate_scopes", "credentials_encrypted"} {
		if slices.Contains(cols, c) {
			t.Errorf("down left %s", c)
		}
	}
	for _, c := range []string{"expires_at", "status", "scopes"} {
		if !slices.Contains(cols, c) {
			t.Errorf("down dropped the app's %s", c)
		}
	}
	if n := countOn(t, url, `SELECT count(*) FROM social_accounts WHERE user_id = $1 AND status = 'inactive' AND scopes = 'w_member_social'`, bob); n != 1 {
		t.Error("the app's values did not survive down")
	}
}

func countOn(t *testing.T, url, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pgtest.Pool(t, url).QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func stringsOn(t *testing.T, url, sql string) []string {
	t.Helper()
	rows, err := pgtest.Pool(t, url).Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
