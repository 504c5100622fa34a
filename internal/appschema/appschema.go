// Package appschema names credgate's columns on the app's social_accounts.
//
// credgate adds its columns to the app's table under the names the
// migration guide gives them (expires_at, status, scopes, …). Three of
// those names are ones an app's own table often has already, for a token
// expiry, an account state or the granted scopes of its own. Taking the
// app's column would mean changing the app, which credgate never asks
// for; sharing it would let credgate's CHECK reject the app's values and
// its rollback drop the app's data. So when the app's table has its own
// column by one of these Movable names, migration 001 gives credgate's
// column the name "credgate_" + name instead (credgate_expires_at,
// credgate_status, credgate_scopes), and every statement credgate runs
// on the table is written with a placeholder ({expires_at}, {status},
// {scopes}) that Columns fills in with the name the table really has.
// Columns are recognised as credgate's by their comment ("credgate: …"),
// as everywhere else.
package appschema

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Movable are credgate's column names that give way to an app column of
// the same name; credgate's other names (credentials_encrypted, …) are
// its own and an app column by one of them is refused.
var Movable = []string{"expires_at", "status", "scopes"}

// Prefix is what a moved column's name starts with.
const Prefix = "credgate_"

// Columns is which of credgate's columns were moved aside on a table.
// The zero value is the guide's names, none moved.
type Columns struct {
	// Moved lists the Movable names whose column is Prefix+name, in
	// Movable's order.
	Moved []string
}

// Name is the column credgate's standard name has on the table.
func (c Columns) Name(standard string) string {
	if slices.Contains(c.Moved, standard) {
		return Prefix + standard
	}
	return standard
}

// Standard reports whether no column was moved.
func (c Columns) Standard() bool { return len(c.Moved) == 0 }

// expanded caches SQL's answers by moved set and statement: the same few
// statements are expanded on every request.
var expanded sync.Map // [2]string{moved, sql} → string

// SQL fills in sql's placeholders ({expires_at}, {status}, {scopes})
// with the names the columns have. Every statement credgate runs on
// social_accounts that names one of them goes through it; a placeholder
// left unfilled is a syntax error, never another column.
func (c Columns) SQL(sql string) string {
	key := [2]string{strings.Join(c.Moved, ","), sql}
	if s, ok := expanded.Load(key); ok {
		return s.(string)
	}
	pairs := make([]string, 0, 2*len(Movable))
	for _, name := range Movable {
		pairs = append(pairs, "{"+name+"}", c.Name(name))
	}
	s := strings.NewReplacer(pairs...).Replace(sql)
	expanded.Store(key, s)
	return s
}

// Querier is what Load reads through: a pool, a connection, a
// transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// LoadSQL reads the moved names off the catalog: one row per moved
// column, its standard name. Callers that read something else in the
// same round trip (vault.LoadSettings) use it in a UNION.
var LoadSQL = `SELECT substr(a.attname::text, ` + strconv.Itoa(len(Prefix)+1) + `)
	FROM pg_attribute a
	WHERE a.attrelid = to_regclass('social_accounts') AND NOT a.attisdropped
	  AND a.attname::text IN ('` + Prefix + strings.Join(Movable, "', '"+Prefix) + `')
	  AND coalesce(col_description(a.attrelid, a.attnum), '') LIKE 'credgate:%'`

// Load reads which of credgate's columns were moved on the database's
// social_accounts (none when the table or the columns do not exist yet).
func Load(ctx context.Context, db Querier) (Columns, error) {
	rows, err := db.Query(ctx, LoadSQL)
	if err != nil {
		return Columns{}, err
	}
	moved, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return Columns{}, err
	}
	return Of(moved), nil
}

// Of is the Columns with the given standard names moved (unknown names
// are ignored).
func Of(moved []string) Columns {
	var c Columns
	for _, name := range Movable {
		if slices.Contains(moved, name) {
			c.Moved = append(c.Moved, name)
		}
	}
	return c
}
