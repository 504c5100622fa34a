// Package pgurl parses the PostgreSQL URL every credgate entry point takes
// (DATABASE_URL, --database-url, database_url), the same way everywhere:
// a bounded connect timeout by default, and errors that never echo the URL,
// which may hold a password.
package pgurl

import (
	"errors"
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
