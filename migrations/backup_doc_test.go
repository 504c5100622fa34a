package migrations_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
)

// docs/backup.md's blocks, run as an operator would: bash, exactly as
// written, with DATABASE_URL and BACKUP_PASSPHRASE_FILE set, in a working
// directory of their own. The `caddy credgate` steps (blocks marked
// test-by-go) are done here through the migrations package.

// The app before credgate: what a real app's table has and what a
// restore must bring back, down to the grant and the policy.
const backupAppSchema = `
CREATE FUNCTION app_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TABLE social_accounts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL,
    platform         text NOT NULL CHECK (platform IN ('twitter', 'linkedin', 'facebook', 'instagram')),
    platform_user_id text,
    username         text,
    access_token     text,
    refresh_token    text,
    token_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT social_accounts_user_platform_key UNIQUE (user_id, platform)
);
CREATE INDEX social_accounts_platform_user_idx ON social_accounts (platform, platform_user_id);
CREATE TRIGGER social_accounts_touch BEFORE UPDATE ON social_accounts
    FOR EACH ROW EXECUTE FUNCTION app_touch_updated_at();
ALTER TABLE social_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY social_accounts_owner ON social_accounts USING (user_id::text = current_setting('app.user_id', true));
GRANT SELECT (id, user_id, platform, username) ON social_accounts TO PUBLIC;
COMMENT ON TABLE social_accounts IS 'The app''s connected accounts';
INSERT INTO social_accounts (user_id, platform, platform_user_id, username, access_token, refresh_token, token_expires_at) VALUES
    ('00000000-0000-4000-8000-000000000001', 'twitter', '101', 'alice', 'plain-access-1', 'plain-refresh-1', now() + interval '2 hours'),
    ('00000000-0000-4000-8000-000000000001', 'linkedin', '102', 'alice', 'plain-access-2', NULL, now() + interval '60 days'),
    ('00000000-0000-4000-8000-000000000002', 'facebook', '201', 'bob', 'plain-access-3', NULL, NULL),
    ('00000000-0000-4000-8000-000000000003', 'instagram', '301', 'carol', 'plain-access-4', 'plain-refresh-4', now() - interval '1 day');
`

// The app's posts reference its accounts; with ON DELETE CASCADE a
// careless restore would delete them.
const backupPosts = `
CREATE TABLE posts (
    id                bigserial PRIMARY KEY,
    social_account_id uuid NOT NULL REFERENCES social_accounts (id) ON DELETE CASCADE,
    body              text NOT NULL
);
INSERT INTO posts (social_account_id, body)
    SELECT id, 'hello from ' || platform FROM social_accounts WHERE platform IN ('twitter', 'linkedin');
`

type docBlock struct {
	byGo bool
	text string
}

var docMark = regexp.MustCompile("(?s)<!-- (test|test-by-go): ([a-z0-9-]+)[^>]*-->\\s*```(?:sh|bash)\\n(.*?)```")

// backupDoc reads docs/backup.md's marked blocks.
func backupDoc(t *testing.T) map[string]docBlock {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "docs", "backup.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]docBlock{}
	for _, m := range docMark.FindAllStringSubmatch(string(b), -1) {
		if _, dup := blocks[m[2]]; dup {
			t.Fatalf("docs/backup.md marks two blocks %q", m[2])
		}
		blocks[m[2]] = docBlock{byGo: m[1] == "test-by-go", text: m[3]}
	}
	for _, name := range []string{"backup-before", "restore-before", "restore-before-whole", "backup-running",
		"restore-running", "restore-running-rows", "rollback"} {
		if _, ok := blocks[name]; !ok {
			t.Fatalf("docs/backup.md has no block marked %q", name)
		}
	}
	return blocks
}

// operator is one shell session's environment and working directory.
type operator struct {
	t      *testing.T
	url    string
	dir    string
	env    []string
	blocks map[string]docBlock
}

func newOperator(t *testing.T, url string, blocks map[string]docBlock) *operator {
	t.Helper()
	for tool, pkg := range map[string]string{"bash": "bash", "gpg": "gnupg", "gpgconf": "gpgconf"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: docs/backup.md needs it (apt-get install %s)", tool, pkg)
		}
	}
	// Debian keeps the client programs in a versioned directory too.
	var path []string
	for _, tool := range []string{"pg_dump", "pg_restore", "psql"} {
		path = append(path, filepath.Dir(pgTool(t, tool)))
	}
	path = append(path, os.Getenv("PATH"))
	// gpg's agent puts its socket in GNUPGHOME, whose path must be short.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "gpg-agent").Run()
		os.RemoveAll(home)
	})
	secrets := t.TempDir()
	passphrase := filepath.Join(secrets, "backup-passphrase")
	if err := os.WriteFile(passphrase, []byte("correct horse battery staple "+randomSuffix(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &operator{t: t, url: url, dir: t.TempDir(), blocks: blocks, env: append(os.Environ(),
		"PATH="+strings.Join(path, string(os.PathListSeparator)),
		"DATABASE_URL="+url, "BACKUP_PASSPHRASE_FILE="+passphrase, "GNUPGHOME="+home, "PSQLRC=/dev/null")}
}

// try runs a block with bash; -e, -u and pipefail make any failure
// inside it the block's failure.
func (o *operator) try(name string, env ...string) (string, error) {
	o.t.Helper()
	b := o.blocks[name]
	if b.byGo {
		o.t.Fatalf("%s is a caddy credgate step, not a shell one", name)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", b.text)
	cmd.Dir, cmd.Env = o.dir, append(slices.Clone(o.env), env...)
	out, err := cmd.CombinedOutput()
	o.t.Logf("docs/backup.md %s:\n%s", name, out)
	return string(out), err
}

func (o *operator) run(name string, env ...string) string {
	o.t.Helper()
	out, err := o.try(name, env...)
	if err != nil {
		o.t.Fatalf("docs/backup.md %s: %v\n%s", name, err, out)
	}
	return out
}

// rollback does what the block marked rollback says, after checking it
// still says it: writeback (the test's rows already hold their current
// tokens in plaintext, as writeback leaves them) and migrate down.
func (o *operator) rollback(ctx context.Context) {
	o.t.Helper()
	b := o.blocks["rollback"]
	if !b.byGo || !regexp.MustCompile(`(?s)caddy credgate writeback --all\b.*\ncaddy credgate migrate down\s`).MatchString(b.text) {
		o.t.Fatalf("docs/backup.md's rollback block is not writeback then migrate down:\n%s", b.text)
	}
	if _, err := migrations.Down(ctx, o.url, migrations.DownOptions{}); err != nil {
		o.t.Fatalf("migrate down: %v", err)
	}
}

// tableState is what a restore must give back: pg_dump's definition of
// the tables, their rows and their sequences' positions.
type tableState struct{ schema, rows string }

func stateOf(t *testing.T, url string, tables []string) tableState {
	t.Helper()
	args := []string{"--dbname=" + url, "--schema-only"}
	for _, table := range tables {
		args = append(args, "--table="+table)
	}
	out, err := exec.Command(pgTool(t, "pg_dump"), args...).Output()
	if err != nil {
		t.Fatalf("pg_dump: %s", errText(err))
	}
	ctx := context.Background()
	conn := connect(t, url)
	var rows []string
	for _, table := range tables {
		var text string
		err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '') FROM `+pgx.Identifier{table}.Sanitize()+` t`).Scan(&text)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, table+":\n"+text)
	}
	var seqs string
	err = conn.QueryRow(ctx, `SELECT coalesce(string_agg(s.relname || ' ' || coalesce(pg_sequence_last_value(s.oid)::text, 'unused'), E'\n' ORDER BY s.relname), '')
		FROM pg_class s
		JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype = 'a'
		JOIN pg_class t ON t.oid = d.refobjid
		WHERE s.relkind = 'S' AND t.relname = ANY ($1)`, tables).Scan(&seqs)
	if err != nil {
		t.Fatal(err)
	}
	return tableState{schema: stripRestrict(string(out)), rows: strings.Join(rows, "\n") + "\nsequences:\n" + seqs}
}

func sameState(t *testing.T, what string, want, got tableState) {
	t.Helper()
	if got.schema != want.schema {
		t.Errorf("%s: the definition differs:\n%s", what, lineDiff(want.schema, got.schema))
	}
	if got.rows != want.rows {
		t.Errorf("%s: the rows differ:\n%s", what, lineDiff(want.rows, got.rows))
	}
}

// canUpsert: the app's upsert needs the unique constraint back.
func canUpsert(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	tx, err := connect(t, url).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, access_token)
		VALUES ('00000000-0000-4000-8000-000000000001', 'twitter', 'upserted')
		ON CONFLICT (user_id, platform) DO UPDATE SET access_token = EXCLUDED.access_token`); err != nil {
		t.Errorf("the app's upsert after the restore: %v", err)
	}
}

// isEncrypted: the backup file is private and holds no token in clear.
func isEncrypted(t *testing.T, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", filepath.Base(path), info.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "plain-access") || strings.Contains(string(b), "social_accounts") {
		t.Errorf("%s holds the dump in clear", filepath.Base(path))
	}
}

func TestBackupDoc(t *testing.T) {
	t.Parallel()
	blocks := backupDoc(t)

	for _, referenced := range []bool{false, true} {
		name := "before credgate, nothing references the accounts"
		if referenced {
			name = "before credgate, posts reference the accounts"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			backupBeforeCredgate(t, blocks, referenced)
		})
		name = "while credgate runs, nothing references the accounts"
		if referenced {
			name = "while credgate runs, posts reference the accounts"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			backupWhileRunning(t, blocks, referenced)
		})
	}

	t.Run("the running backup names every table of credgate's", func(t *testing.T) {
		t.Parallel()
		want := append([]string{"social_accounts", migrations.VersionTable}, migrations.Tables...)
		var dumped []string
		for _, m := range regexp.MustCompile(`--table=([a-z_]+)`).FindAllStringSubmatch(blocks["backup-running"].text, -1) {
			dumped = append(dumped, m[1])
		}
		slices.Sort(want)
		slices.Sort(dumped)
		if !slices.Equal(dumped, want) {
			t.Errorf("backup-running dumps %v, want %v", dumped, want)
		}
		m := regexp.MustCompile(`(?s)TRUNCATE (.*?);`).FindStringSubmatch(blocks["restore-running-rows"].text)
		if m == nil {
			t.Fatal("restore-running-rows truncates nothing")
		}
		var truncated []string
		for _, name := range regexp.MustCompile(`[a-z_]+`).FindAllString(strings.ReplaceAll(m[1], "echo", ""), -1) {
			truncated = append(truncated, name)
		}
		slices.Sort(truncated)
		if !slices.Equal(truncated, slices.DeleteFunc(slices.Clone(want), func(s string) bool { return s == "social_accounts" })) {
			t.Errorf("restore-running-rows truncates %v, want every dumped table but social_accounts", truncated)
		}
	})
}

func backupBeforeCredgate(t *testing.T, blocks map[string]docBlock, referenced bool) {
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, backupAppSchema)
	tables := []string{"social_accounts"}
	if referenced {
		pgtest.Exec(t, url, backupPosts)
	}
	op := newOperator(t, url, blocks)
	before := stateOf(t, url, tables)

	listed := op.run("backup-before")
	for _, want := range []string{"CONSTRAINT public social_accounts social_accounts_pkey", "CONSTRAINT public social_accounts social_accounts_user_platform_key",
		"INDEX public social_accounts_platform_user_idx", "TRIGGER public social_accounts social_accounts_touch",
		"POLICY public social_accounts social_accounts_owner", "TABLE DATA public social_accounts"} {
		if !strings.Contains(listed, want) {
			t.Errorf("the backup's listing lacks %q", want)
		}
	}
	isEncrypted(t, filepath.Join(op.dir, "social_accounts.before-credgate.dump.gpg"))

	// credgate comes and the app goes on: a renewal, a new account, one
	// removed, a backfilled blob; then the way back.
	if _, err := migrations.Up(ctx, url); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, url, `UPDATE social_accounts SET access_token = 'renewed', refresh_token = 'rotated' WHERE platform = 'twitter';
		INSERT INTO social_accounts (user_id, platform, access_token) VALUES ('00000000-0000-4000-8000-000000000004', 'twitter', 'new-account');
		DELETE FROM social_accounts WHERE platform = 'facebook';
		UPDATE social_accounts SET credentials_encrypted = '\x01', credentials_key_id = 1 WHERE platform = 'linkedin'`)
	if referenced {
		pgtest.Exec(t, url, `INSERT INTO posts (social_account_id, body) SELECT id, 'posted since' FROM social_accounts WHERE platform = 'linkedin'`)
	}
	op.rollback(ctx)
	if got := stateOf(t, url, tables); got.schema != before.schema {
		t.Errorf("migrate down left another definition than the app's:\n%s", lineDiff(before.schema, got.schema))
	}
	var posts tableState
	if referenced {
		posts = stateOf(t, url, []string{"posts"})
		pre := stateOf(t, url, tables)
		out, err := op.try("restore-before-whole")
		if err == nil || !strings.Contains(out, "because other objects depend on it") {
			t.Errorf("the whole-table restore with posts referencing the table: %v\n%s", err, out)
		}
		sameState(t, "a failed whole-table restore", pre, stateOf(t, url, tables))
	} else {
		op.run("restore-before-whole")
		sameState(t, "restore-before-whole", before, stateOf(t, url, tables))
		canUpsert(t, url)
	}
	out := op.run("restore-before")
	if !strings.Contains(out, "restored_accounts") {
		t.Errorf("restore-before printed no count:\n%s", out)
	}
	sameState(t, "restore-before", before, stateOf(t, url, tables))
	canUpsert(t, url)
	if !referenced {
		return
	}
	sameState(t, "the app's posts", posts, stateOf(t, url, []string{"posts"}))

	// An account connected since the backup has a post: the restore
	// refuses, naming the table, and changes nothing.
	pgtest.Exec(t, url, `WITH a AS (INSERT INTO social_accounts (user_id, platform, access_token)
			VALUES ('00000000-0000-4000-8000-000000000005', 'linkedin', 'connected-since') RETURNING id)
		INSERT INTO posts (social_account_id, body) SELECT id, 'by a new account' FROM a`)
	pre := stateOf(t, url, []string{"social_accounts", "posts"})
	out, err := op.try("restore-before")
	if err == nil || !strings.Contains(out, "1 rows of posts point at accounts the backup does not have (posts_social_account_id_fkey): nothing was restored") {
		t.Errorf("restore over a post of a newer account: %v\n%s", err, out)
	}
	sameState(t, "a refused restore", pre, stateOf(t, url, []string{"social_accounts", "posts"}))
}

func backupWhileRunning(t *testing.T, blocks map[string]docBlock, referenced bool) {
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, backupAppSchema)
	if referenced {
		pgtest.Exec(t, url, backupPosts)
	}
	if _, err := migrations.Up(ctx, url); err != nil {
		t.Fatal(err)
	}
	// credgate at work: a sealed account, its refresh job, the key's
	// fingerprint, a setting, audit events, an outcome, a state.
	pgtest.Exec(t, url, `
		UPDATE social_accounts SET credentials_encrypted = '\x01', credentials_key_id = 1, connected_via = 'credgate', access_token = NULL, refresh_token = NULL
			WHERE platform = 'twitter';
		INSERT INTO token_refresh_queue (social_account_id, run_at) SELECT id, now() + interval '1 hour' FROM social_accounts WHERE platform = 'twitter';
		INSERT INTO encryption_keys (id, fingerprint) VALUES (1, '\xaa');
		INSERT INTO credgate_settings (name, value) VALUES ('app_refresh', 'off');
		INSERT INTO credential_audit_log (action, status, platform, flow) VALUES ('connect', 'success', 'twitter', 'new'), ('refresh', 'failed', 'linkedin', NULL);
		INSERT INTO rollout_outcomes (platform, arm, bucket, successes) VALUES ('twitter', 'new', date_trunc('minute', now()), 3);
		INSERT INTO oauth_states (state_hash, user_id, platform, redirect_uri) VALUES (sha256('s1'), gen_random_uuid(), 'linkedin', 'https://app.test/cb')`)
	tables := append([]string{"social_accounts", migrations.VersionTable}, migrations.Tables...)
	op := newOperator(t, url, blocks)
	before := stateOf(t, url, tables)

	op.run("backup-running")
	found, _ := filepath.Glob(filepath.Join(op.dir, "credgate.*.dump.gpg"))
	if len(found) != 1 {
		t.Fatalf("backup-running wrote %v", found)
	}
	backup := found[0]
	isEncrypted(t, backup)
	about, err := os.ReadFile(backup + ".txt")
	if err != nil || strings.TrimSpace(string(about)) != "schema version "+strconv.Itoa(fileVersions(t)[len(fileVersions(t))-1])+", key ids: 1" {
		t.Errorf("the backup's .txt: %q %v", about, err)
	}

	// Afterwards: renewals, a job done and gone, new events, a new
	// account, a changed setting, the state consumed.
	pgtest.Exec(t, url, `
		UPDATE social_accounts SET credentials_encrypted = '\x02', credentials_version = credentials_version + 1 WHERE platform = 'twitter';
		UPDATE social_accounts SET access_token = 'renewed-by-the-app' WHERE platform = 'instagram';
		DELETE FROM token_refresh_queue;
		INSERT INTO credential_audit_log (action, status) VALUES ('refresh', 'success');
		INSERT INTO social_accounts (user_id, platform, access_token) VALUES ('00000000-0000-4000-8000-000000000004', 'facebook', 'new-account');
		UPDATE credgate_settings SET value = 'on';
		DELETE FROM oauth_states`)
	env := "BACKUP=" + filepath.Base(backup)
	if referenced {
		posts := stateOf(t, url, []string{"posts"})
		pre := stateOf(t, url, tables)
		out, err := op.try("restore-running", env)
		if err == nil || !strings.Contains(out, "because other objects depend on it") {
			t.Errorf("the whole restore with posts referencing the accounts: %v\n%s", err, out)
		}
		sameState(t, "a failed whole restore", pre, stateOf(t, url, tables))
		op.run("restore-running-rows", env)
		sameState(t, "restore-running-rows", before, stateOf(t, url, tables))
		sameState(t, "the app's posts", posts, stateOf(t, url, []string{"posts"}))
	} else {
		op.run("restore-running", env)
		sameState(t, "restore-running", before, stateOf(t, url, tables))
	}
	canUpsert(t, url)
	s := inspect(t, url)
	assertComplete(t, s)
	// The audit log is append-only again.
	if _, err := connect(t, url).Exec(ctx, `DELETE FROM credential_audit_log`); err == nil {
		t.Error("the restored audit log accepts DELETE")
	}
}
