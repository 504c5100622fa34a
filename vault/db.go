package vault

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgurl"
)

// DB is what the stores run on: a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
// Passing a transaction lets a caller commit a credential change together
// with its audit row and refresh job, or neither.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// InTx runs fn in a transaction on db (a savepoint when db is already a
// transaction) and commits when fn returns nil. On a pool behind a
// transaction pooler the transaction begins with credgate's session
// limits as SET LOCAL (pgurl.NewPool), as its sessions cannot carry them.
func InTx(ctx context.Context, db DB, fn func(tx pgx.Tx) error) error {
	if pool, ok := db.(*pgxpool.Pool); ok {
		if opts, limited := pgurl.TxOptions(pool); limited {
			return pgx.BeginTxFunc(ctx, pool, opts, fn)
		}
	}
	return pgx.BeginFunc(ctx, db, fn)
}

// Errors the stores return; test with errors.Is.
var (
	ErrNotConnected    = errors.New("no connected account for this user and platform")
	ErrVersionConflict = errors.New("credentials changed since they were read")
	ErrStateNotFound   = errors.New("oauth state is unknown or already used")
	ErrStateExpired    = errors.New("oauth state has expired")
	ErrKeyMismatch     = errors.New("master key does not match the fingerprint recorded in the database")
)
