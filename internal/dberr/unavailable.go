package dberr

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// Unavailable reports whether err means the database could not be
// reached or did not answer in time: a refused or failed connection, a
// network error, a connection cut mid-answer, a timeout, a closed pool.
// It is a positive list: an SQL error, a constraint, no rows, a version
// conflict, a validation error or a cancelled client is not an outage,
// and must not be reported (or alerted on) as one.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*pgconn.PgError](err); ok {
		return false // PostgreSQL answered
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if errors.Is(err, context.Canceled) {
		return false // the caller went away; the database may be fine
	}
	if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, puddle.ErrClosedPool)
}

// Retryable reports whether the same statement may succeed if sent again
// in a moment: the database was unavailable (above), or answered that it
// is shutting down or restarting (class 57: 57P01 when a fast restart or
// a failover ends the session), that the connection failed (class 08),
// that the transaction lost a serialization or deadlock race, or that a
// lock or an idle transaction timed out (a partitioned holder's lock).
func Retryable(err error) bool {
	if Unavailable(err) {
		return true
	}
	pg, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		return false
	}
	switch {
	case strings.HasPrefix(pg.Code, "57"), strings.HasPrefix(pg.Code, "08"):
		return true
	}
	switch pg.Code {
	case "40001", "40P01", "55P03", "25P03":
		return true
	}
	return false
}
