// Package dberr turns database errors into one line an operator can act
// on, for the CLI and for logs: PostgreSQL's errors carry detail on
// several lines, pgx repeats a dial error once per address tried, and
// golang-migrate embeds whole SQL files in its messages.
package dberr

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/jackc/pgx/v5/pgconn"
)

// Explain wraps err as "<doing>: <one-line cause>". The cause keeps its
// SQLSTATE, never the SQL text or a password (pgx redacts those).
func Explain(doing string, err error) error {
	if err == nil {
		return nil
	}
	// golang-migrate's database.Error embeds the SQL and does not unwrap.
	if dbErr, ok := errors.AsType[database.Error](err); ok && dbErr.OrigErr != nil {
		err = dbErr.OrigErr
	} else if dbErr, ok := errors.AsType[*database.Error](err); ok && dbErr.OrigErr != nil {
		err = dbErr.OrigErr
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		if hint := PoolerHint(err); hint != "" {
			return fmt.Errorf("%s: %s (SQLSTATE %s): %s", doing, OneLine(pgErr.Message), pgErr.Code, hint)
		}
		return fmt.Errorf("%s: %s (SQLSTATE %s)", doing, OneLine(pgErr.Message), pgErr.Code)
	}
	if netErr, ok := errors.AsType[*net.OpError](err); ok {
		return fmt.Errorf("%s: %s", doing, OneLine(netErr.Error()))
	}
	return fmt.Errorf("%s: %s", doing, OneLine(err.Error()))
}

// OneLine folds all white space, newlines included, to single spaces.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// PoolerHint names the likely cause of an error a transaction-mode
// pooler causes when credgate does not know it is there, or "": a named
// prepared statement that exists on another server connection or not on
// this one (42P05, 26000), or a startup parameter the pooler refuses.
// These are configuration errors, not outages.
func PoolerHint(err error) string {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		return ""
	}
	switch {
	case pgErr.Code == "42P05" && strings.Contains(pgErr.Message, "stmtcache_"),
		pgErr.Code == "26000" && strings.Contains(pgErr.Message, "stmtcache_"),
		strings.Contains(pgErr.Message, "unsupported startup parameter"):
		return "the database URL goes through a transaction-mode pooler (PgBouncer pool_mode=transaction, Supabase's pooler on 6543): add pooler=transaction to it (README, \"Behind a pooler\")"
	}
	return ""
}
