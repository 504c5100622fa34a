package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
)

// fileVersions lists the embedded files' versions, in order.
func fileVersions(t testing.TB) []int {
	t.Helper()
	entries, err := fs.ReadDir(migrations.Files(), ".")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		var v int
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err == nil && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// fileOf is the embedded file of version v in direction "up" or "down".
func fileOf(t *testing.T, v int, direction string) string {
	t.Helper()
	entries, _ := fs.ReadDir(migrations.Files(), ".")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("%03d_", v)) && strings.HasSuffix(e.Name(), "."+direction+".sql") {
			return e.Name()
		}
	}
	t.Fatalf("no %s file for version %d", direction, v)
	return ""
}

// source is the embedded files up to version upTo (all when upTo < 0),
// with some files' text changed by edit.
func source(t *testing.T, upTo int, edit map[string]func(string) string) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.Files(), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var v int
		if _, err := fmt.Sscanf(e.Name(), "%d_", &v); err != nil || (upTo >= 0 && v > upTo) {
			continue
		}
		b, err := fs.ReadFile(migrations.Files(), e.Name())
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if f := edit[e.Name()]; f != nil {
			text = f(text)
		}
		out[e.Name()] = &fstest.MapFile{Data: []byte(text)}
	}
	return out
}

// failAtEnd makes a file fail after every one of its statements ran: if
// anything of it survives the failure, the file is not all or nothing.
func failAtEnd(text string) string {
	return text + "\n;\nDO $$ BEGIN RAISE EXCEPTION 'injected failure at the end of the file'; END $$;\n"
}

// poisoned replaces a file by one that fails as soon as it runs.
func poisoned(string) string {
	return "DO $$ BEGIN RAISE EXCEPTION 'this file must not run again'; END $$;\n"
}

// pgTool finds a PostgreSQL client program on PATH or in Debian's
// versioned directory; the test fails, naming the package, without it.
func pgTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(found) == 0 {
		t.Fatalf("%s is missing: install PostgreSQL's client programs (apt-get install postgresql-client)", name)
	}
	sort.Strings(found)
	return found[len(found)-1]
}

// dumpDatabase is pg_dump's view of the whole database, schema and rows,
// less the version table (golang-migrate's bookkeeping, which a failed
// run does change) and the dump's random \restrict key.
func dumpDatabase(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command(pgTool(t, "pg_dump"), "--dbname="+url, "--exclude-table="+migrations.VersionTable).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", errText(err))
	}
	return stripRestrict(string(out))
}

func stripRestrict(dump string) string {
	var keep []string
	for _, line := range strings.Split(dump, "\n") {
		if !strings.HasPrefix(line, `\restrict `) && !strings.HasPrefix(line, `\unrestrict `) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

func errText(err error) string {
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return fmt.Sprintf("%v: %s", err, ee.Stderr)
	}
	return err.Error()
}

func mustFail(t *testing.T, err error) migrations.ErrMigrationFailed {
	t.Helper()
	failed, ok := errors.AsType[migrations.ErrMigrationFailed](err)
	if !ok {
		t.Fatalf("err = %v, want ErrMigrationFailed", err)
	}
	return failed
}

func inspect(t *testing.T, url string) migrations.Schema {
	t.Helper()
	s, err := migrations.Inspect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The claim the dirty-version repair rests on, checked for every file,
// the ones added later included: a file that fails at its very end leaves
// the database exactly as before it ran, through the runner's own path
// (golang-migrate, pgx, one Query message). A file with a COMMIT or BEGIN
// of its own, or sent statement by statement, fails here.
func TestEveryFileIsAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, v := range fileVersions(t) {
		upFile, downFile := fileOf(t, v, "up"), fileOf(t, v, "down")
		t.Run(upFile, func(t *testing.T) {
			t.Parallel()
			url := pgtest.EmptyDatabase(t)
			pgtest.Exec(t, url, legacyTable)
			pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token)
				VALUES (gen_random_uuid(), 'twitter', 'a1', 'r1'), (gen_random_uuid(), 'linkedin', 'a2', NULL)`)
			if v > 1 { // golang-migrate refuses a source with no file
				if _, err := migrations.UpFrom(ctx, url, source(t, v-1, nil)); err != nil {
					t.Fatalf("up to %d: %v", v-1, err)
				}
			}
			before := dumpDatabase(t, url)

			_, err := migrations.UpFrom(ctx, url, source(t, v, map[string]func(string) string{upFile: failAtEnd}))
			f := mustFail(t, err)
			if f.File != upFile || !f.RolledBack || f.SQLState != "P0001" || f.Applied != uint(max(v-1, 0)) {
				t.Errorf("failure = %+v, want %s rolled back at version %d", f.Failure, upFile, v-1)
			}
			if after := dumpDatabase(t, url); after != before {
				t.Errorf("%s failed and left changes behind:\n%s", upFile, lineDiff(before, after))
			}
			if _, err := migrations.Up(ctx, url); err != nil {
				t.Fatalf("up after the failure: %v", err)
			}
			assertComplete(t, inspect(t, url))
		})
		t.Run(downFile, func(t *testing.T) {
			t.Parallel()
			url := pgtest.EmptyDatabase(t)
			pgtest.Exec(t, url, legacyTable)
			if _, err := migrations.UpFrom(ctx, url, source(t, v, nil)); err != nil {
				t.Fatalf("up to %d: %v", v, err)
			}
			before := dumpDatabase(t, url)

			_, err := migrations.DownFrom(ctx, url, migrations.DownOptions{}, source(t, v, map[string]func(string) string{downFile: failAtEnd}))
			f := mustFail(t, err)
			if f.File != downFile || !f.RolledBack || f.Applied != uint(v) || f.Command != "caddy credgate migrate down" {
				t.Errorf("failure = %+v, want %s rolled back at version %d", f.Failure, downFile, v)
			}
			if after := dumpDatabase(t, url); after != before {
				t.Errorf("%s failed and left changes behind:\n%s", downFile, lineDiff(before, after))
			}
			rep, err := migrations.DownFrom(ctx, url, migrations.DownOptions{}, source(t, v, nil))
			if err != nil {
				t.Fatalf("down after the failure: %v", err)
			}
			if rep.After.Version != 0 || rep.After.Dirty || rep.After.Failure != nil {
				t.Errorf("after down: version %d dirty %v failure %v", rep.After.Version, rep.After.Dirty, rep.After.Failure)
			}
		})
	}
}

// lineDiff shows the lines only one of two dumps has.
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, "- "+l)
		case n < 0:
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// The app has a table of its own by one of credgate's names (its own
// oauth_states, which the preflight of social_accounts does not look
// at): up fails in 001 with PostgreSQL's message and the next step,
// nothing of 001 is applied, status says so (not that `migrate up`
// repairs it: it fails the same way until the table is renamed), and
// once it is renamed up applies everything and forgets the failure.
func TestFailedUpSaysWhichFileAndWhatToDo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, legacyTable)
	pgtest.Exec(t, url, `CREATE TABLE oauth_states (state text PRIMARY KEY, provider text NOT NULL)`)
	first := fileOf(t, 1, "up")

	for attempt := range 2 {
		_, err := migrations.Up(ctx, url)
		f := mustFail(t, err)
		for _, want := range []string{
			first + ` failed: column "expires_at" does not exist (SQLSTATE 42703).`,
			"Nothing of " + first + " was applied: each file runs as one transaction.",
			"Next: do what PostgreSQL's message says, then run `caddy credgate migrate up` again: it starts at " + first + ".",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("attempt %d: error lacks %q:\n%v", attempt, want, err)
			}
		}
		if strings.Contains(err.Error(), "CREATE TABLE") || strings.Contains(err.Error(), "\n") {
			t.Errorf("error embeds SQL or spans lines: %v", err)
		}
		if f.Direction != "up" || f.File != first || !f.RolledBack || f.Applied != 0 {
			t.Errorf("attempt %d: failure = %+v", attempt, f.Failure)
		}

		s := inspect(t, url)
		if !s.Dirty || s.Failure == nil || s.Failure.File != first || s.Failure.Cause != f.Cause {
			t.Fatalf("attempt %d: inspect = dirty %v failure %+v", attempt, s.Dirty, s.Failure)
		}
		if v, known := s.Applied(); v != 0 || !known {
			t.Errorf("applied = %d, %v; want 0, known", v, known)
		}
		happened, next := s.Dirtiness()
		if !strings.Contains(happened, "`caddy credgate migrate up` failed in "+first) ||
			!strings.Contains(happened, `column "expires_at" does not exist`) || !strings.Contains(next, "do what PostgreSQL's message says") {
			t.Errorf("dirtiness:\n%s\n%s", happened, next)
		}
		for _, p := range append(s.Tables, s.RLS...) {
			if p.Present && p.Name != "oauth_states" {
				t.Errorf("%s exists after a failed 001", p.Name)
			}
		}
	}

	pgtest.Exec(t, url, `ALTER TABLE oauth_states RENAME TO app_oauth_states`)
	rep, err := migrations.Up(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Before.Failure == nil || rep.After.Failure != nil {
		t.Errorf("before %+v, after %+v", rep.Before.Failure, rep.After.Failure)
	}
	assertComplete(t, rep.After)
	var comment *string
	if err := connect(t, url).QueryRow(ctx, `SELECT obj_description($1::regclass, 'pg_class')`, migrations.VersionTable).Scan(&comment); err != nil || comment != nil {
		t.Errorf("the failure record outlived the repair: %v %v", comment, err)
	}
}

// A long transaction of the app's holds social_accounts: 001 gives up
// after its lock_timeout, and the error says whom to wait for.
func TestLockTimeoutSaysWhatToWaitFor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, legacyTable)
	app := connect(t, url)
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE social_accounts IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	_, err = migrations.Up(ctx, url)
	f := mustFail(t, err)
	if f.SQLState != "55P03" || !f.RolledBack || f.File != fileOf(t, 1, "up") ||
		!strings.Contains(err.Error(), "a long transaction of the app's on social_accounts") ||
		!strings.Contains(err.Error(), "pg_stat_activity") {
		t.Errorf("lock timeout: %+v\n%v", f.Failure, err)
	}
	tx.Rollback(ctx)
	assertComplete(t, mustUp(t, url).After)
}

// A later file fails: the next up starts again at that file, not at 001
// (which would take the app's table's lock again for nothing). The
// second run's 001 and 002 would fail if they ran.
func TestUpStartsAgainAtTheFailedFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	third := fileOf(t, 3, "up")
	_, err := migrations.UpFrom(ctx, url, source(t, -1, map[string]func(string) string{third: failAtEnd}))
	if f := mustFail(t, err); f.File != third || f.Applied != 2 {
		t.Fatalf("failure = %+v", f.Failure)
	}
	s := inspect(t, url)
	if v, known := s.Applied(); v != 2 || !known || s.Version != 3 {
		t.Errorf("applied %d (%v), version table %d; want 2, known, 3", v, known, s.Version)
	}

	rep, err := migrations.UpFrom(ctx, url, source(t, -1, map[string]func(string) string{
		fileOf(t, 1, "up"): poisoned, fileOf(t, 2, "up"): poisoned,
	}))
	if err != nil {
		t.Fatalf("up ran a file before the failed one again: %v", err)
	}
	assertComplete(t, rep.After)
	if rep.Before.Failure == nil || rep.Before.Failure.File != third {
		t.Errorf("report before: %+v", rep.Before.Failure)
	}
}

// A run whose connection dies inside a file records that the file applied
// whole or not at all, and the next up finishes the job.
func TestKilledRunIsFinishedByUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pgtest.Exec(t, url, legacyTable)
	app := connect(t, url)
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE social_accounts IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := migrations.Up(ctx, url); done <- err }()
	// The migration's session waits for the app's lock: end it there.
	admin := connect(t, url)
	deadline := time.Now().Add(4 * time.Second)
	for {
		var n int
		err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
			WHERE NOT granted AND relation = 'social_accounts'::regclass`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the migration never waited for the app's lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f := mustFail(t, <-done)
	if f.RolledBack || f.SQLState != "57P01" || !strings.Contains(f.Next(), "once the database answers") {
		t.Errorf("killed run: %+v, next %q", f.Failure, f.Next())
	}
	s := inspect(t, url)
	if _, known := s.Applied(); known {
		t.Error("the applied version of a killed run is reported as known")
	}
	if happened, _ := s.Dirtiness(); !strings.Contains(happened, "applied whole or not at all") {
		t.Errorf("dirtiness: %s", happened)
	}
	tx.Rollback(ctx)
	assertComplete(t, mustUp(t, url).After)
}

// A dirty version with no record (an older binary, a process killed
// before it could write one): status names both files that may have been
// running, and up runs that version's file again.
func TestDirtyVersionWithoutRecord(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	last := fileVersions(t)[len(fileVersions(t))-1]
	pgtest.Exec(t, url, `DROP TABLE renewal_leases`) // 005's, as if 005 had rolled back
	pgtest.Exec(t, url, fmt.Sprintf(`UPDATE %s SET version = 5, dirty = true`, migrations.VersionTable))

	s := inspect(t, url)
	happened, next := s.Dirtiness()
	wantUp, wantDown := fileOf(t, 5, "up"), ""
	if last > 5 {
		wantDown = fileOf(t, 6, "down")
	}
	if !strings.Contains(happened, "stopped in "+wantUp) || !strings.Contains(happened, wantDown) ||
		!strings.Contains(next, "run `caddy credgate migrate up`: it runs "+wantUp+" again") {
		t.Errorf("dirtiness:\n%s\n%s", happened, next)
	}
	rep := mustUp(t, url)
	assertComplete(t, rep.After)
	if got := rep.Created(); !slices.Equal(got, []string{"renewal_leases"}) {
		t.Errorf("repair created %v, want [renewal_leases]", got)
	}
}
