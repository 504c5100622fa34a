package dberr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/internal/pgtest"
)

// Outages are recognised positively; everything else is not one.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A real refused connection and a real timeout.
	_, refused := pgx.Connect(ctx, "postgres://u@127.0.0.1:1/x?connect_timeout=2")
	url := pgtest.Database(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, timedOut := conn.Exec(tctx, `SELECT pg_sleep(1)`)
	cancel()
	conn2, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(ctx)
	var n int
	noRows := conn2.QueryRow(ctx, `SELECT 1 WHERE false`).Scan(&n)
	_, sqlErr := conn2.Exec(ctx, `SELECT * FROM no_such_table`)
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	_, cancelled := conn2.Exec(cctx, `SELECT 1`)

	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused connection", refused, true},
		{"query timeout", timedOut, true},
		{"cut connection", fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true},
		{"no rows", noRows, false},
		{"SQL error", sqlErr, false},
		{"client cancelled", cancelled, false},
		{"a version conflict", errors.New("credentials changed since they were read"), false},
		{"nil", nil, false},
	} {
		if c.err == nil && c.name != "nil" {
			t.Fatalf("%s: the setup produced no error", c.name)
		}
		if got := dberr.Unavailable(c.err); got != c.want {
			t.Errorf("%s (%v): Unavailable = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	if _, ok := errors.AsType[*pgconn.PgError](sqlErr); !ok {
		t.Fatalf("the SQL error is not a PgError: %v", sqlErr)
	}
}

// Retryable adds what PostgreSQL itself says will pass: a shutdown or
// restart (57P01 from a real pg_terminate_backend), a lock timeout; not a
// missing table or a constraint.
func TestRetryable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Database(t)
	victim, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(ctx)
	killer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer killer.Close(ctx)
	if _, err := killer.Exec(ctx, `SELECT pg_terminate_backend($1)`, victim.PgConn().PID()); err != nil {
		t.Fatal(err)
	}
	_, terminated := victim.Exec(ctx, `SELECT 1`)
	_, missing := killer.Exec(ctx, `SELECT * FROM no_such_table`)
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"terminated (57P01)":  {terminated, true},
		"lock_not_available":  {&pgconn.PgError{Code: "55P03"}, true},
		"serialization":       {&pgconn.PgError{Code: "40001"}, true},
		"idle in transaction": {&pgconn.PgError{Code: "25P03"}, true},
		"missing table":       {missing, false},
		"unique violation":    {&pgconn.PgError{Code: "23505"}, false},
		"no error":            {nil, false},
		"cancelled by caller": {context.Canceled, false},
	} {
		if got := dberr.Retryable(c.err); got != c.want {
			t.Errorf("%s (%v): retryable %v, want %v", name, c.err, got, c.want)
		}
	}
}

// The errors a transaction pooler causes when credgate does not know it
// is there are configuration errors, named as such, not outages.
func TestPoolerErrorsAreNamed(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "42P05", Message: `prepared statement "stmtcache_0123" already exists`}, true},
		{&pgconn.PgError{Code: "26000", Message: `prepared statement "stmtcache_0123" does not exist`}, true},
		{&pgconn.PgError{Code: "08P01", Message: "unsupported startup parameter: statement_timeout"}, true},
		{&pgconn.PgError{Code: "42P05", Message: `prepared statement "mine" already exists`}, false},
		{&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, false},
		{errors.New("dial tcp: connection refused"), false},
	} {
		if got := dberr.PoolerHint(tc.err) != ""; got != tc.want {
			t.Errorf("dberr.PoolerHint(%v) names the pooler: %v, want %v", tc.err, got, tc.want)
		}
		if tc.want && (dberr.Unavailable(tc.err) || !strings.Contains(dberr.Explain("reading", tc.err).Error(), "pooler=transaction")) {
			t.Errorf("%v: unavailable %v, explained %q", tc.err, dberr.Unavailable(tc.err), dberr.Explain("reading", tc.err))
		}
	}
}
