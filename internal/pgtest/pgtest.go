// Package pgtest gives each test its own PostgreSQL database, so tests run
// in parallel against a real server without seeing each other's rows.
//
// The server is named by TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable). When no server
// answers, the test fails and names the variable: a missing database must
// never turn into a skipped, silently green test.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/migrations"
)

// EnvURL names the variable that points the tests at a server.
const EnvURL = "TEST_DATABASE_URL"

// DefaultURL is used when EnvURL is unset; it matches the CI machine.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// ServerURL is the URL of the database the helper connects to in order to
// create and drop the per-test databases.
func ServerURL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// EmptyDatabase creates a fresh database with nothing in it, dropped when
// the test ends, and returns its URL.
func EmptyDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	server := ServerURL()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("pgtest: no PostgreSQL answers at %s=%s: %v (start PostgreSQL or point %s at one)",
			EnvURL, redact(server), err, EnvURL)
	}
	defer admin.Close(ctx)

	name := databaseName(t.Name())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, server)
		if err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		// FORCE ends connections a failed test may have leaked.
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return withDatabase(t, server, name)
}

// Database creates a fresh database with every migration applied, dropped
// when the test ends, and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	u := EmptyDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := migrations.Up(ctx, u); err != nil {
		t.Fatalf("pgtest: migrating test database: %v", err)
	}
	return u
}

// Pool opens a pool on databaseURL, closed when the test ends;
// configure may change its config first (a query tracer).
func Pool(t testing.TB, databaseURL string, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		t.Fatalf("pgtest: parsing the database URL: %v", err)
	}
	for _, c := range configure {
		c(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: opening pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Exec runs SQL on databaseURL and fails the test on error.
func Exec(t testing.TB, databaseURL, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// databaseName is unique per call and readable enough to find a leaked
// database's test in psql's \l.
func databaseName(testName string) string {
	b := make([]byte, 4)
	rand.Read(b)
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(testName), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	return fmt.Sprintf("cgtest_%s_%s", base, hex.EncodeToString(b))
}

// withDatabase returns serverURL pointing at another database.
func withDatabase(t testing.TB, serverURL, name string) string {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("pgtest: %s must be a postgres:// URL", EnvURL)
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// TamperedBlob is an SQL expression for credentials_encrypted with one
// byte of its ciphertext changed, for tests of a blob that no longer
// opens. The byte is XORed with 0xff, so it always changes: overwriting
// it with 0xff, as the tests did, left the blob intact once in 256 runs
// (a loaded run failed on it).
const TamperedBlob = `set_byte(credentials_encrypted, 39, get_byte(credentials_encrypted, 39) # 255)`
