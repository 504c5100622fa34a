// Package pgurl parses the PostgreSQL URL every credgate entry point takes
// (DATABASE_URL, --database-url, database_url), the same way everywhere:
// a bounded connect timeout by default, and errors that never echo the URL,
// which may hold a password.
package pgurl

import (
	"errors"
	"maps"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultConnectTimeout bounds a connection attempt when the URL does not
// set connect_timeout itself, so a dead server fails fast.
const DefaultConnectTimeout = 10 * time.Second

// ErrMissing is returned for an empty URL.
var ErrMissing = errors.New("no database URL: set DATABASE_URL or pass --database-url")

// Parse parses databaseURL into a pool configuration.
func Parse(databaseURL string) (*pgxpool.Config, error) {
	if strings.TrimSpace(databaseURL) == "" {
		return nil, ErrMissing
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, errors.New("the database URL is not valid: expected postgres://user[:password]@host[:port]/dbname[?options]")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	return cfg, nil
}

// sessionLimits are the settings credgate's long-running sessions start
// with unless the URL sets them itself (any PostgreSQL setting can be a
// URL parameter: ?lock_timeout=5s). They bound what a session can hold
// when the path to it breaks: in a partition PostgreSQL never hears that
// a replica has gone, and without them a renewal's row lock would be held
// until TCP gives up (two hours by default).
//
//   - idle_in_transaction_session_timeout: a transaction that stops
//     talking (its replica cut off) ends after a minute, releasing its
//     locks. A renewal's transaction is idle at most while it waits for
//     the platform (30 s by default).
//   - lock_timeout: a statement waits at most 15 s for a lock.
//   - statement_timeout: no statement runs past a minute.
//   - tcp_keepalives_* and tcp_user_timeout: the server notices a dead
//     client within about a minute, even mid-transaction.
var sessionLimits = map[string]string{
	"idle_in_transaction_session_timeout": "60s",
	"lock_timeout":                        "15s",
	"statement_timeout":                   "60s",
	"tcp_keepalives_idle":                 "15",
	"tcp_keepalives_interval":             "5",
	"tcp_keepalives_count":                "3",
	"tcp_user_timeout":                    "60000",
}

// LimitSessions gives cfg's sessions the limits above, except those the
// URL sets, and keepalives on the client's side of each connection (a
// dead server is noticed within about half a minute).
func LimitSessions(cfg *pgxpool.Config) {
	for k, v := range sessionLimits {
		if _, set := cfg.ConnConfig.RuntimeParams[k]; !set {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}}
	cfg.ConnConfig.DialFunc = d.DialContext
}

// SessionLimits lists the defaults, for docs and tests.
func SessionLimits() map[string]string { return maps.Clone(sessionLimits) }
