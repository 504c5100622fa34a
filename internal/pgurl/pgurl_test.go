package pgurl_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/internal/pgurl"
)

// The sessions of a limited pool carry the limits, and a setting in the
// URL wins over the default.
func TestSessionLimitsReachTheServer(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	cfg, err := pgurl.Parse(url + "&lock_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	pgurl.LimitSessions(cfg, pgurl.Direct)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for setting, want := range map[string]string{
		"idle_in_transaction_session_timeout": "1min",
		"statement_timeout":                   "1min",
		"lock_timeout":                        "3s",
		"tcp_user_timeout":                    "60000",
		"tcp_keepalives_idle":                 "15",
	} {
		var got string
		if err := pool.QueryRow(context.Background(), "SELECT current_setting($1)", setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
}

// What a URL says about a pooler, and what Parse does about it: the
// transaction pooler's query mode, credgate's own parameters removed
// (a server refuses a startup parameter it does not know), and no
// session limits sent to a transaction pooler.
func TestPoolerModes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		want pgurl.PoolerMode
		mode pgx.QueryExecMode
	}{
		{"postgres://u@db.example.supabase.co:5432/postgres", pgurl.Direct, pgx.QueryExecModeCacheStatement},
		{"postgres://u@aws-0-eu.pooler.supabase.com:6543/postgres", pgurl.TransactionPooler, pgx.QueryExecModeCacheDescribe},
		{"postgres://u@aws-0-eu.pooler.supabase.com:6543/postgres?pooler=session", pgurl.Direct, pgx.QueryExecModeCacheStatement},
		{"postgres://u@bouncer:6432/app?pooler=transaction", pgurl.TransactionPooler, pgx.QueryExecModeCacheDescribe},
		{"postgres://u@bouncer:6432/app?pgbouncer=true", pgurl.TransactionPooler, pgx.QueryExecModeCacheDescribe},
		{"postgres://u@bouncer:6432/app?pooler=transaction&default_query_exec_mode=simple_protocol", pgurl.TransactionPooler, pgx.QueryExecModeSimpleProtocol},
		{"postgres://u@bouncer:6432/app?pooler=transaction&default_query_exec_mode=exec", pgurl.TransactionPooler, pgx.QueryExecModeCacheDescribe},
		{"host=bouncer port=6432 dbname=app pooler=transaction", pgurl.TransactionPooler, pgx.QueryExecModeCacheDescribe},
	} {
		mode, err := pgurl.Pooler(tc.url)
		if err != nil || mode != tc.want {
			t.Errorf("Pooler(%s) = %s %v, want %s", tc.url, mode, err, tc.want)
		}
		cfg, err := pgurl.Parse(tc.url)
		if err != nil {
			t.Fatalf("Parse(%s): %v", tc.url, err)
		}
		if cfg.ConnConfig.DefaultQueryExecMode != tc.mode {
			t.Errorf("Parse(%s): query mode %v, want %v", tc.url, cfg.ConnConfig.DefaultQueryExecMode, tc.mode)
		}
		for _, own := range []string{"pooler", "pgbouncer"} {
			if _, sent := cfg.ConnConfig.RuntimeParams[own]; sent {
				t.Errorf("Parse(%s) would send %s to the server", tc.url, own)
			}
		}
		pgurl.LimitSessions(cfg, mode)
		_, limited := cfg.ConnConfig.RuntimeParams["statement_timeout"]
		if limited != (mode == pgurl.Direct) {
			t.Errorf("%s: session limits sent = %v", tc.url, limited)
		}
	}
	if _, err := pgurl.Pooler("postgres://u@h/db?pooler=statement"); err == nil {
		t.Error("pooler=statement was accepted")
	}
}

// Behind a transaction pooler the limits reach the server in each
// transaction begun with TxOptions, the URL's values winning, and none
// goes out at startup (PgBouncer would refuse it). The idle limit
// really ends a transaction that stops talking.
func TestTransactionLimitsBehindAPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	through := pgtest.Bouncer(t, pgtest.Database(t))
	cfg, err := pgurl.Parse(through + "&lock_timeout=3s&idle_in_transaction_session_timeout=1s")
	if err != nil {
		t.Fatal(err)
	}
	limits := pgurl.LimitSessions(cfg, pgurl.TransactionPooler)
	if limits == "" {
		t.Fatal("no transaction limits behind a transaction pooler")
	}
	pool, err := pgurl.NewPool(ctx, cfg, limits)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	opts, ok := pgurl.TxOptions(pool)
	if !ok {
		t.Fatal("TxOptions: the pool has no limits")
	}
	err = pgx.BeginTxFunc(ctx, pool, opts, func(tx pgx.Tx) error {
		for setting, want := range map[string]string{
			"idle_in_transaction_session_timeout": "1s",
			"statement_timeout":                   "1min",
			"lock_timeout":                        "3s",
		} {
			var got string
			if err := tx.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&got); err != nil {
				return err
			}
			if got != want {
				t.Errorf("in a transaction: %s = %q, want %q", setting, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A transaction that goes quiet past the limit is ended by the
	// server, its locks with it.
	tx, err := pool.BeginTx(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := tx.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("a transaction idle past idle_in_transaction_session_timeout went on")
	}
	tx.Rollback(ctx)

	// A pool on a direct connection has none: its sessions carry them.
	direct, err := pgurl.Parse(pgtest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	if l := pgurl.LimitSessions(direct, pgurl.Direct); l != "" {
		t.Errorf("direct: transaction limits %q", l)
	}
}
