package runbooktest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/caddylog"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/internal/testhttp"
	"github.com/credgate/credgate/internal/testport"
	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/vault"
)

// The operator follows the runbook with a back end that reads through
// the token API from Phase 3½ on, purges at the cutover, then goes all
// the way back.
func TestRunbookWithTheTokenAPI(t *testing.T) {
	t.Parallel()
	runRunbook(t, backendTokenAPI)
}

// The same with a back end that never changes: it reads its own table
// throughout, and transition mode keeps the moved users' tokens there.
func TestRunbookWithTransitionMode(t *testing.T) {
	t.Parallel()
	runRunbook(t, backendTransition)
}

type backendMode int

const (
	backendTokenAPI backendMode = iota
	backendTransition
)

// The realistic app table: a uuid key the database makes, the unique
// pair the app upserts on, the app's own expiry column, an updated_at
// trigger, an index, and a table of posts that references the accounts.
var appSchema = pgtest.AppTable + `;
CREATE INDEX social_accounts_user_idx ON social_accounts (user_id);
CREATE FUNCTION app_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER social_accounts_touch BEFORE UPDATE ON social_accounts
    FOR EACH ROW EXECUTE FUNCTION app_touch_updated_at();
CREATE TABLE posts (
    id                bigserial PRIMARY KEY,
    social_account_id uuid NOT NULL REFERENCES social_accounts (id),
    body              text,
    created_at        timestamptz NOT NULL DEFAULT now()
);`

const (
	jwtSecret    = "runbook-test-jwt-secret-runbook-test-jwt-secret"
	serviceToken = "runbook-test-service-token"
	adminToken   = "runbook-test-admin-token"
)

var platforms = []string{"facebook", "instagram", "linkedin", "twitter"}

// users is how many users the app has before credgate: enough that a
// 25 % rollout moves some and leaves some, whatever their ids hash to.
const users = 40

// postScopes are what the app asks for: the sign-in and the posting
// scope of each platform.
var postScopes = map[string][]string{
	"twitter":   {"tweet.read", "tweet.write", "users.read", "offline.access"},
	"linkedin":  {"openid", "profile", "w_member_social"},
	"facebook":  {"public_profile", "pages_manage_posts"},
	"instagram": {"instagram_business_basic", "instagram_business_content_publish"},
}

// postPaths are the sandbox's content APIs, under each platform's API base.
var postPaths = map[string]string{
	"twitter":   "/2/tweets",
	"linkedin":  "/v2/ugcPosts",
	"facebook":  "/v22.0/me/feed",
	"instagram": "/v22.0/me/media",
}

func runRunbook(t *testing.T, mode backendMode) {
	w := newWorld(t)
	ctx := context.Background()

	// The app before credgate: 40 users with live grants on every
	// platform, and two rows whose tokens died long ago.
	var live []account
	for i := range users {
		u := fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1)
		for _, p := range platforms {
			w.app.seed(t, u, p)
			live = append(live, account{u, p})
		}
	}
	for i := range 2 {
		pgtest.Exec(t, w.url, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token, token_expires_at)
			VALUES ($1, 'twitter', $2, 'long-revoked', now() - interval '3 days')`,
			fmt.Sprintf("00000000-0000-4000-9000-%012d", i+1), fmt.Sprintf("expired-%d", i))
	}
	w.everyonePosts(t, "before credgate", live)

	// Before you start: the backup.
	w.run(t, "backup.md", "backup-before")
	before := w.snapshot(t)

	// Phase 1.
	w.run(t, "RUNBOOK.md", "schema")
	w.run(t, "RUNBOOK.md", "app-expiry-column")
	w.everyonePosts(t, "after migrate up", live)

	// Phases 2 and 3: credgate in front, at 0 %.
	w.startCaddy(t)
	w.run(t, "RUNBOOK.md", "rollout-zero")
	w.run(t, "RUNBOOK.md", "backfill")
	w.everyonePosts(t, "after backfill", live)
	w.noAppColumnTouched(t, before)

	// Phase 3½: the back end reads through credgate (or transition mode).
	if mode == backendTransition {
		// Before it: `rollout set` refuses to move anyone.
		if out, err := w.try(t, "RUNBOOK.md", "rollout", "25"); err == nil || !strings.Contains(out, "back end") {
			t.Fatalf("rollout set 25 with the back end on its own table and transition mode off: %v\n%s", err, out)
		}
		w.run(t, "RUNBOOK.md", "transition-on")
	} else {
		w.app.setMode(readTokenAPI)
	}
	w.everyonePosts(t, "the back end reads through credgate", live)
	w.waitForBackendReads(t, mode)

	// Phase 4: 25 %; every user reconnects Twitter through the app's
	// connect route, and the rollout splits them.
	w.run(t, "RUNBOOK.md", "rollout", "25")
	w.waitForRollout(t, "25")
	arms := map[string]int{}
	for _, a := range live {
		if a.platform == "twitter" {
			arms[w.connect(t, a.user, a.platform)]++
		}
	}
	if arms["new"] == 0 || arms["legacy"] == 0 {
		t.Fatalf("at 25 %% the %d reconnects went %v, want both arms", users, arms)
	}
	w.everyonePosts(t, "at 25 %", live)

	// 100 %: everyone who connects moves (every LinkedIn account), a
	// new user too.
	w.run(t, "RUNBOOK.md", "rollout", "100")
	w.waitForRollout(t, "100")
	newcomer := account{"00000000-0000-4000-a000-000000000001", "twitter"}
	for _, a := range append(slices.Clone(live), newcomer) {
		if a.platform != "linkedin" && a != newcomer {
			continue
		}
		if arm := w.connect(t, a.user, a.platform); arm != "new" {
			t.Fatalf("at 100 %% %s on %s went %s", a.user, a.platform, arm)
		}
	}
	live = append(live, newcomer)
	w.everyonePosts(t, "at 100 %", live)

	// Phase 5: the app's refresh off; with the token API, the purge.
	w.run(t, "RUNBOOK.md", "app-refresh-off")
	if mode == backendTokenAPI {
		w.run(t, "RUNBOOK.md", "purge")
		var plaintext int
		if err := w.pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts WHERE access_token IS NOT NULL AND expires_at > now()`).Scan(&plaintext); err != nil || plaintext != 0 {
			t.Fatalf("%d live rows kept plaintext after the purge (%v)", plaintext, err)
		}
	}
	w.everyonePosts(t, "after the cutover steps", live)

	// Rollback, all the way: 0 %, the way back, the back end on its own
	// table again.
	rollback := w.segments(t, "RUNBOOK.md", "rollback")
	if len(rollback) != 2 {
		t.Fatalf("the rollback block has %d parts, want 2 (split at its comment)", len(rollback))
	}
	w.runScript(t, "rollback, first part", rollback[0])
	w.waitForRollout(t, "0")
	w.app.setMode(readTable)
	w.everyonePosts(t, "after the way back, the app reading its own table", live)

	// A moved user reconnects through the app at 0 %: the app's token is
	// the newest, for the app and for the token API alike.
	moved := live[0]
	if arm := w.connect(t, moved.user, moved.platform); arm != "legacy" {
		t.Fatalf("at 0 %% the reconnect went %s", arm)
	}
	w.everyonePosts(t, "after a reconnect through the app", live)
	tableToken := w.app.tableToken(t, moved.user, moved.platform)
	if got := w.app.tokenAPIToken(t, moved.user, moved.platform); got != tableToken {
		t.Fatalf("the token API serves another token than the one the app just wrote")
	}

	// Take credgate out: the app alone, then the schema dropped.
	w.stopCaddy(t)
	w.runScript(t, "rollback, second part", rollback[1])
	w.everyonePosts(t, "credgate out, its schema dropped", live)

	// Restore: the table exactly as it was before credgate.
	w.run(t, "backup.md", "restore-before")
	after := w.snapshot(t)
	if after.schema != before.schema {
		t.Errorf("the restored table's definition differs:\nbefore:\n%s\nafter:\n%s", before.schema, after.schema)
	}
	if after.rows != before.rows {
		b, a := strings.Split(before.rows, "\n"), strings.Split(after.rows, "\n")
		var differ []int
		for i := range min(len(a), len(b)) {
			if a[i] != b[i] {
				differ = append(differ, i)
			}
		}
		t.Errorf("the restored rows differ: %d rows before, %d after, rows %v differ", len(b), len(a), differ)
	}
}

type account struct{ user, platform string }

// world is one run: its database, sandbox, app, credgate and shell.
type world struct {
	url        string
	pool       *pgxpool.Pool
	dir        string // the operator's working directory
	env        []string
	sandboxURL string
	sandbox    *sandbox.Server
	app        *stubApp
	front      string // credgate in front of the app
	internal   string // the token API
	caddy      *exec.Cmd
	caddyLog   string
	jars       map[string]http.CookieJar
	tokens     map[string]string
	mu         sync.Mutex
}

func newWorld(t *testing.T) *world {
	w := &world{dir: t.TempDir(), jars: map[string]http.CookieJar{}, tokens: map[string]string{}}
	w.url = pgtest.EmptyDatabase(t)
	pgtest.Exec(t, w.url, appSchema)
	w.pool = pgtest.Pool(t, w.url)

	frontPort, internalPort := testport.Free(t), testport.Free(t)
	w.front = fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	w.internal = fmt.Sprintf("http://127.0.0.1:%d", internalPort)

	w.sandbox = sandbox.New(sandbox.Config{AutoApprove: true, Apps: sandbox.DefaultApps(w.front)})
	sb := httptest.NewServer(w.sandbox)
	t.Cleanup(sb.Close)
	w.sandboxURL = sb.URL

	w.app = newStubApp(t, w)
	flags, err := os.ReadFile(filepath.Join(repoRoot(t), "flags", "flags.example.json"))
	if err != nil {
		t.Fatal(err)
	}
	flagsFile := filepath.Join(w.dir, "flags.json")
	if err := os.WriteFile(flagsFile, flags, 0o644); err != nil {
		t.Fatal(err)
	}
	// The backups' passphrase (backup.md) and a gpg home of the run's
	// own: short, as gpg-agent's socket path must be.
	passphrase := filepath.Join(w.dir, "backup-passphrase")
	if err := os.WriteFile(passphrase, []byte(vault.NewMasterKey()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gnupg, err := os.MkdirTemp("", "cg-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(gnupg, 0o700)
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", gnupg, "--kill", "gpg-agent").Run()
		os.RemoveAll(gnupg)
	})
	w.env = append(os.Environ(),
		"BACKUP_PASSPHRASE_FILE="+passphrase,
		"GNUPGHOME="+gnupg,
		"PATH="+filepath.Dir(caddyBinary(t))+string(os.PathListSeparator)+os.Getenv("PATH"),
		"DATABASE_URL="+w.url,
		"ENCRYPTION_MASTER_KEY="+vault.NewMasterKey(),
		"CREDGATE_FLAGS_FILE="+flagsFile,
	)
	return w
}

// startCaddy runs credgate in front of the app, as the runbook's Phase 2
// puts it: the app's routes behind it, the token API on an internal
// listener, the flag file the rollout commands edit.
func (w *world) startCaddy(t *testing.T) {
	t.Helper()
	var providers strings.Builder
	for _, p := range platforms {
		fmt.Fprintf(&providers, `		provider %s {
			client_id %s-client-id
			client_secret %s-client-secret
			redirect_url %s/api/%s/callback
			sandbox %s
			scopes %s
		}
`, p, p, p, w.front, p, w.sandboxURL, strings.Join(postScopes[p], " "))
	}
	config := fmt.Sprintf(`{
	admin off
	credgate {
		database_url {env.DATABASE_URL}
		master_key {env.ENCRYPTION_MASTER_KEY}
		flags flagd {env.CREDGATE_FLAGS_FILE}
%s	}
}

%s {
	bind 127.0.0.1
	credgate {
		public_origin %s
		identity {
			supabase %s
			jwt_secret %s
		}
		return_to_allow /
		admin_token %s
		legacy_start /api/{platform}/connect
	}
	reverse_proxy %s
}

%s {
	bind 127.0.0.1
	credgate_tokens {
		service_token %s
		serve_legacy_plaintext
	}
	respond "not found" 404
}
`, providers.String(), w.front, w.front, w.front, jwtSecret, adminToken, strings.TrimPrefix(w.app.url, "http://"),
		w.internal, serviceToken)
	file := filepath.Join(w.dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	w.caddyLog = filepath.Join(w.dir, "caddy.log")
	logFile, err := os.Create(w.caddyLog)
	if err != nil {
		t.Fatal(err)
	}
	w.caddy = exec.Command(caddyBinary(t), "run", "--config", file, "--adapter", "caddyfile")
	w.caddy.Env, w.caddy.Dir, w.caddy.Stdout, w.caddy.Stderr = w.env, w.dir, logFile, logFile
	if err := w.caddy.Start(); err != nil {
		t.Fatal(err)
	}
	caddylog.ShowOnFailure(t, w.caddyLog)
	t.Cleanup(func() {
		w.stopCaddy(t)
		logFile.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, w.front+"/api/credentials/service-health", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := testhttp.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("credgate did not become healthy in 30 s (%v); its log:\n%s", err, caddylog.Tail(w.caddyLog))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (w *world) stopCaddy(t *testing.T) {
	if w.caddy == nil || w.caddy.Process == nil || w.caddy.ProcessState != nil {
		return
	}
	w.caddy.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- w.caddy.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		w.caddy.Process.Kill()
		<-done
	}
}

// run runs a marked block of doc as written; args replace its first
// number (the runbook's `rollout set 25`, "then 50, 75, 100").
func (w *world) run(t *testing.T, doc, name string, args ...string) string {
	t.Helper()
	out, err := w.try(t, doc, name, args...)
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", doc, name, err, out)
	}
	return out
}

func (w *world) try(t *testing.T, doc, name string, args ...string) (string, error) {
	t.Helper()
	script := strings.Join(w.segments(t, doc, name), "\n")
	if len(args) > 0 {
		script = strings.Replace(script, " set 25 ", " set "+args[0]+" ", 1)
	}
	return w.script(t, script)
}

func (w *world) runScript(t *testing.T, what, script string) {
	t.Helper()
	if out, err := w.script(t, script); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
}

func (w *world) script(t *testing.T, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Env, cmd.Dir = w.env, w.dir
	out, err := cmd.CombinedOutput()
	t.Logf("$ %s\n%s", strings.ReplaceAll(strings.TrimSpace(script), "\n", "\n$ "), out)
	return string(out), err
}

// segments are a marked block's commands, split at its full-line
// comments (a comment says what happens between two parts).
func (w *world) segments(t *testing.T, doc, name string) []string {
	t.Helper()
	block := markedBlock(t, doc, name)
	var parts []string
	var cur []string
	for _, line := range strings.Split(block, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			if len(cur) > 0 {
				parts = append(parts, strings.Join(cur, "\n"))
				cur = nil
			}
			continue
		}
		if strings.TrimSpace(line) != "" {
			cur = append(cur, line)
		}
	}
	if len(cur) > 0 {
		parts = append(parts, strings.Join(cur, "\n"))
	}
	return parts
}

var markRE = regexp.MustCompile("(?s)<!-- (?:runbook-)?test: ([a-z0-9-]+) -->\\s*```(?:sh|bash)\\n(.*?)```")

// markedBlock is the fenced shell block right after <!-- runbook-test:
// name --> (or <!-- test: name -->) in docs/doc.
func markedBlock(t *testing.T, doc, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", doc))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range markRE.FindAllStringSubmatch(string(b), -1) {
		if m[1] == name {
			// Blocks inside list items are indented.
			var lines []string
			for _, l := range strings.Split(m[2], "\n") {
				lines = append(lines, strings.TrimLeft(l, " "))
			}
			return strings.Join(lines, "\n")
		}
	}
	t.Fatalf("docs/%s has no block marked %q", doc, name)
	return ""
}

// everyonePosts: every live account can post, through whatever the
// app's back end reads at this step.
func (w *world) everyonePosts(t *testing.T, step string, live []account) {
	t.Helper()
	var failed []string
	for _, a := range live {
		if err := w.app.post(a.user, a.platform); err != nil {
			failed = append(failed, fmt.Sprintf("%s/%s: %v", a.user, a.platform, err))
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%s: %d of %d accounts cannot post:\n%s", step, len(failed), len(live), strings.Join(failed, "\n"))
	}
}

// waitForRollout waits until credgate applies the flag file's new
// percentage (it reads the file every 250 ms).
func (w *world) waitForRollout(t *testing.T, percent string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, w.front+"/api/credentials/service-health", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if resp, err := testhttp.Client().Do(req); err == nil {
			var health struct {
				Flags struct {
					Rollout string `json:"rollout"`
				} `json:"flags"`
			}
			json.NewDecoder(resp.Body).Decode(&health)
			resp.Body.Close()
			last = health.Flags.Rollout
			if strings.Contains(last, " "+percent+" %") {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("credgate did not apply %s %% within 10 s; its rollout: %q", percent, last)
}

// waitForBackendReads waits until every replica's count of back-end reads
// (flushed every second) has every platform, as `rollout set` checks.
func (w *world) waitForBackendReads(t *testing.T, mode backendMode) {
	t.Helper()
	if mode != backendTokenAPI {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		reads, err := vault.BackendReadsIn(context.Background(), w.pool, time.Hour)
		if err == nil && len(reads) == len(platforms) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("back-end reads not recorded after 10 s: %v %v", reads, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// connect runs a connect through the app's connect route, as a signed-in
// browser: the rollout sends it to credgate's flow or the app's; either
// way the platform's consent (auto-approved) and the callback follow.
// It returns the arm that finished it.
func (w *world) connect(t *testing.T, user, platform string) string {
	t.Helper()
	w.mu.Lock()
	jar, ok := w.jars[user]
	if !ok {
		jar, _ = cookiejar.New(nil)
		w.jars[user] = jar
	}
	w.mu.Unlock()
	client := testhttp.NoRedirects()
	client.Jar = jar
	next := w.front + "/api/" + platform + "/connect"
	for range 8 {
		req, _ := http.NewRequest(http.MethodGet, next, nil)
		if strings.HasPrefix(next, w.front) {
			req.Header.Set("Authorization", "Bearer "+w.session(t, user))
			req.Header.Set("X-Test-User", user)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode/100 != 3 || loc == "" {
			t.Fatalf("connect %s/%s: %s answered %d: %s", user, platform, next, resp.StatusCode, tail(body, 500))
		}
		target, err := resp.Request.URL.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		q := target.Query()
		switch {
		case q.Get("connected") == platform:
			return "new"
		case q.Get("legacy_connected") == platform:
			return "legacy"
		case q.Get("oauth_error") != "" || q.Get("legacy_error") != "":
			t.Fatalf("connect %s/%s failed: %s", user, platform, target)
		case strings.HasPrefix(target.String(), w.sandboxURL):
			// The same sandbox identity on both arms, as one person.
			q.Set("sandbox_user", user)
			target.RawQuery = q.Encode()
		}
		next = target.String()
	}
	t.Fatalf("connect %s/%s: too many redirects", user, platform)
	return ""
}

// session is the user's Supabase-style session, signed with the
// identity block's secret.
func (w *world) session(t *testing.T, user string) string {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if tok, ok := w.tokens[user]; ok {
		return tok
	}
	out, err := exec.Command(caddyBinary(t), "credgate", "devtoken", "--user", user, "--secret", jwtSecret,
		"--issuer", w.front+"/auth/v1", "--ttl", "2h").Output()
	if err != nil {
		t.Fatalf("devtoken: %v", err)
	}
	w.tokens[user] = strings.TrimSpace(string(out))
	return w.tokens[user]
}

// snapshot is the app's table as pg_dump and a sorted read see it.
type snapshot struct{ schema, rows string }

func (w *world) snapshot(t *testing.T) snapshot {
	t.Helper()
	out, err := exec.Command("pg_dump", "--schema-only", "--table=social_accounts", "--no-owner", w.url).Output()
	if err != nil {
		t.Fatalf("pg_dump --schema-only: %v (pg_dump must be installed: it comes with PostgreSQL)", err)
	}
	// The dump's header names the server and tool versions only.
	var schema []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "--") && !strings.HasPrefix(l, "\\restrict") && !strings.HasPrefix(l, "\\unrestrict") && strings.TrimSpace(l) != "" {
			schema = append(schema, l)
		}
	}
	rows, err := w.pool.Query(context.Background(), `SELECT to_jsonb(s)::text FROM social_accounts s ORDER BY user_id, platform`)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	return snapshot{schema: strings.Join(schema, "\n"), rows: strings.Join(all, "\n")}
}

// noAppColumnTouched: backfill wrote only credgate's columns; the app's
// are as the backup has them. updated_at excepted: the app's own trigger
// sets it on every UPDATE, credgate's too (credgate never sets it on a
// backfill).
func (w *world) noAppColumnTouched(t *testing.T, before snapshot) {
	t.Helper()
	rows, err := w.pool.Query(context.Background(), `SELECT to_jsonb(s) - ARRAY['credentials_encrypted', 'credentials_key_id',
		'credentials_version', 'expires_at', 'status', 'scopes', 'last_refreshed_at', 'connected_via', 'app_token_fingerprint',
		'app_token_current', 'updated_at']::text[] FROM social_accounts s ORDER BY user_id, platform`)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for rows.Next() {
		var r map[string]any
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r)
		all = append(all, string(b))
	}
	var want []string
	for _, r := range strings.Split(before.rows, "\n") {
		var m map[string]any
		json.Unmarshal([]byte(r), &m)
		delete(m, "updated_at")
		b, _ := json.Marshal(m)
		want = append(want, string(b))
	}
	if !slices.Equal(all, want) {
		// Rows hold tokens: say which differ, not what they hold.
		var differ []int
		for i := range min(len(all), len(want)) {
			if all[i] != want[i] {
				differ = append(differ, i)
			}
		}
		t.Fatalf("backfill changed the app's columns: %d rows before, %d after, rows %v differ", len(want), len(all), differ)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// repoRoot is the module's root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// caddyBinary builds ./cmd/caddy once per test run: the same modules as
// `make build`, without xcaddy.
func caddyBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "credgate-runbook-")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "caddy")
		cmd := exec.Command("go", "build", "-o", built, "./cmd/caddy")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built != "" {
		os.RemoveAll(filepath.Dir(built))
	}
	os.Exit(code)
}
