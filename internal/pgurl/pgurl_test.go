package pgurl_test

import (
	"context"
	"testing"

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
	pgurl.LimitSessions(cfg)
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
