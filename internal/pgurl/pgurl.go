// Package pgurl parses the PostgreSQL URL every credgate entry point takes
// (DATABASE_URL, --database-url, database_url), the same way everywhere:
// a bounded connect timeout by default, and errors that never echo the URL,
// which may hold a password.
package pgurl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultConnectTimeout bounds a connection attempt when the URL does not
// set connect_timeout itself, so a dead server fails fast.
const DefaultConnectTimeout = 10 * time.Second

// ErrMissing is returned for an empty URL.
var ErrMissing = errors.New("no database URL: set DATABASE_URL or pass --database-url")

// Parse parses databaseURL into a pool configuration. Behind a
// transaction-mode pooler (see Pooler) it uses pgx's cache_describe
// query mode: each statement goes out as one unnamed Parse/Bind/Execute
// in a single round trip, with its parameter types known, so nothing
// depends on the server connection staying the same between statements.
// pgx's default (named prepared statements cached per connection) fails
// there with 42P05/26000, as the pooler hands each transaction another
// server connection.
func Parse(databaseURL string) (*pgxpool.Config, error) {
	if strings.TrimSpace(databaseURL) == "" {
		return nil, ErrMissing
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, errors.New("the database URL is not valid: expected postgres://user[:password]@host[:port]/dbname[?options]")
	}
	mode, err := poolerOf(cfg.ConnConfig.Config.Port, cfg.ConnConfig.RuntimeParams)
	if err != nil {
		return nil, err
	}
	if mode == TransactionPooler {
		switch cfg.ConnConfig.DefaultQueryExecMode {
		case pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheDescribe:
			// Both work through a transaction pooler: the URL chose.
		default:
			cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		}
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	return cfg, nil
}

// PoolerMode is what stands between credgate and PostgreSQL.
type PoolerMode string

// The modes. A session-mode pooler behaves as a direct connection.
const (
	// Direct: PostgreSQL itself, or a session-mode pooler.
	Direct PoolerMode = "direct"
	// TransactionPooler: a pooler that hands each transaction a server
	// connection of its own (PgBouncer's pool_mode = transaction,
	// Supabase's pooler on port 6543): no session state survives a
	// transaction, no named prepared statement either, and startup
	// parameters other than a few are refused.
	TransactionPooler PoolerMode = "transaction"
)

// SupabaseTransactionPort is the port of Supabase's transaction-mode
// pooler (Supavisor); its session mode is on 5432.
const SupabaseTransactionPort = 6543

// Pooler reports what databaseURL connects through: TransactionPooler
// when the URL says so (pooler=transaction, or pgbouncer=true as Prisma
// and others write it) or uses Supabase's transaction pooler port 6543;
// Direct otherwise (pooler=session or pooler=direct say so explicitly).
// credgate cannot tell a PgBouncer in transaction mode on another port
// by itself: such a URL must say pooler=transaction.
func Pooler(databaseURL string) (PoolerMode, error) {
	if strings.TrimSpace(databaseURL) == "" {
		return Direct, ErrMissing
	}
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return Direct, errors.New("the database URL is not valid: expected postgres://user[:password]@host[:port]/dbname[?options]")
	}
	return poolerOf(cfg.ConnConfig.Config.Port, cfg.ConnConfig.RuntimeParams)
}

// poolerOf reads the mode from the URL's parameters (which pgx puts
// among the startup parameters) and removes credgate's own from them:
// PostgreSQL and the poolers refuse a startup parameter they do not
// know.
func poolerOf(port uint16, params map[string]string) (PoolerMode, error) {
	mode := Direct
	if port == SupabaseTransactionPort {
		mode = TransactionPooler
	}
	if v, ok := params["pgbouncer"]; ok {
		delete(params, "pgbouncer")
		if v == "true" {
			mode = TransactionPooler
		}
	}
	if v, ok := params["pooler"]; ok {
		delete(params, "pooler")
		switch PoolerMode(v) {
		case TransactionPooler:
			mode = TransactionPooler
		case Direct, "session":
			mode = Direct
		default:
			return Direct, errors.New(`the database URL's pooler parameter must be "transaction" (PgBouncer in transaction mode, Supabase's pooler on 6543), "session" or "direct"`)
		}
	}
	return mode, nil
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
//
// Behind a transaction-mode pooler no setting is sent at startup: a
// pooler refuses startup parameters it does not know (PgBouncer:
// "unsupported startup parameter"), and a session setting would not
// follow the transactions anyway, as each may run on another server
// connection. The timeouts (the defaults, or the URL's) move into the
// transactions instead: LimitSessions returns the statement each
// transaction credgate begins on a pool made by NewPool starts with,
// SET LOCAL for each, sent with BEGIN in one round trip. A transaction
// is where credgate holds locks, so that is where the limits matter; a
// single statement outside one is bounded by its caller's deadline,
// which cancels it at the server. The TCP settings, which belong to the
// server connection, are left to the pooler (README, "Behind a
// pooler").
func LimitSessions(cfg *pgxpool.Config, mode PoolerMode) TransactionLimits {
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}}
	cfg.ConnConfig.DialFunc = d.DialContext
	if mode != TransactionPooler {
		for k, v := range sessionLimits {
			if _, set := cfg.ConnConfig.RuntimeParams[k]; !set {
				cfg.ConnConfig.RuntimeParams[k] = v
			}
		}
		return ""
	}
	var begin strings.Builder
	begin.WriteString("BEGIN")
	for _, k := range slices.Sorted(maps.Keys(sessionLimits)) {
		if strings.HasPrefix(k, "tcp_") {
			delete(cfg.ConnConfig.RuntimeParams, k)
			continue
		}
		v, set := cfg.ConnConfig.RuntimeParams[k]
		if set {
			delete(cfg.ConnConfig.RuntimeParams, k) // the pooler would refuse it
		} else {
			v = sessionLimits[k]
		}
		fmt.Fprintf(&begin, "; SET LOCAL %s = '%s'", k, strings.ReplaceAll(v, "'", "''"))
	}
	return TransactionLimits(begin.String())
}

// TransactionLimits is the statement that begins each transaction on a
// pool whose sessions cannot carry credgate's limits (a transaction
// pooler's); empty when they can.
type TransactionLimits string

// transactionLimits holds the limits of each pool NewPool made with
// some, weakly: an entry goes with its pool.
var transactionLimits sync.Map // weak.Pointer[pgxpool.Pool] → TransactionLimits

// NewPool makes a pool on cfg (connecting lazily) whose transactions,
// begun through TxOptions (vault.InTx does), start with limits.
func NewPool(ctx context.Context, cfg *pgxpool.Config, limits TransactionLimits) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil || limits == "" {
		return pool, err
	}
	key := weak.Make(pool)
	transactionLimits.Store(key, limits)
	runtime.AddCleanup(pool, func(k weak.Pointer[pgxpool.Pool]) { transactionLimits.Delete(k) }, key)
	return pool, nil
}

// TxOptions returns the options to begin a transaction on pool with:
// its limits, when NewPool gave it some (ok reports whether it did).
func TxOptions(pool *pgxpool.Pool) (opts pgx.TxOptions, ok bool) {
	v, ok := transactionLimits.Load(weak.Make(pool))
	if !ok {
		return pgx.TxOptions{}, false
	}
	return pgx.TxOptions{BeginQuery: string(v.(TransactionLimits))}, true
}

// SessionLimits lists the defaults, for docs and tests.
func SessionLimits() map[string]string { return maps.Clone(sessionLimits) }
