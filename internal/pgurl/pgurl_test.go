package pgurl_test

import (
	"context"
	"testing"

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
