package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// AppTable is a realistic app's social_accounts before credgate: a uuid
// key the database makes, the unique pair the app upserts on, the app's
// own expiry column and timestamps. Tests add to it (rows, indexes,
// triggers, referencing tables) or break it on purpose.
const AppTable = `CREATE TABLE social_accounts (
	id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	user_id          uuid NOT NULL,
	platform         text NOT NULL,
	platform_user_id text,
	username         text,
	access_token     text,
	refresh_token    text,
	token_expires_at timestamptz,
	created_at       timestamptz NOT NULL DEFAULT now(),
	updated_at       timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT social_accounts_user_platform_key UNIQUE (user_id, platform))`

// Columns lists social_accounts' columns in databaseURL, in order.
func Columns(t testing.TB, databaseURL string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT attname::text FROM pg_attribute
		WHERE attrelid = 'social_accounts'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
