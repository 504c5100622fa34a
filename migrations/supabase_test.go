package migrations_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/migrations"
)

func randomSuffix(t *testing.T) string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// On Supabase the API roles get every privilege on new public tables by
// default. The migration must take those back on its own tables (RLS does
// not cover TRUNCATE) and give users read access to their own accounts.
// The Supabase parts are emulated here: the roles, the auth schema with
// auth.uid(), and Supabase's default privileges on tables, with no app
// table yet (TestSupabaseProject has the app's own).
func TestSupabaseGuardedStatements(t *testing.T) {
	url := pgtest.EmptyDatabase(t)
	ctx := context.Background()
	pgtest.EnsureSupabaseRoles(t)
	pgtest.Exec(t, url, `CREATE SCHEMA auth;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
			AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
		GRANT USAGE ON SCHEMA auth TO anon, authenticated;
		GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated;
		ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated;`)

	mustUp(t, url)

	conn := connect(t, url)
	for _, table := range migrations.Tables {
		for _, role := range []string{"anon", "authenticated"} {
			for _, priv := range []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"} {
				var has bool
				if err := conn.QueryRow(ctx, `SELECT has_table_privilege($1, $2, $3)`, role, table, priv).Scan(&has); err != nil {
					t.Fatal(err)
				}
				if has {
					t.Errorf("%s still has %s on %s", role, priv, table)
				}
			}
		}
	}

	// The owner-read policy lets a user read their own row and no other,
	// once the app's RLS is on (the migration leaves that switch to the app).
	pgtest.Exec(t, url, `ALTER TABLE social_accounts ENABLE ROW LEVEL SECURITY;
		INSERT INTO social_accounts (user_id, platform) VALUES
			('11111111-1111-1111-1111-111111111111', 'twitter'),
			('22222222-2222-2222-2222-222222222222', 'twitter')`)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claim.sub', '11111111-1111-1111-1111-111111111111', true); SET LOCAL ROLE authenticated`); err != nil {
		t.Fatal(err)
	}
	var mine int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM social_accounts`).Scan(&mine); err != nil {
		t.Fatal(err)
	}
	if mine != 1 {
		t.Errorf("authenticated user sees %d accounts, want only their own 1", mine)
	}
	tx.Rollback(ctx)

	// Down removes the policy and leaves the app's table.
	mustDown(t, url)
	var policies int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_policies WHERE policyname = 'credgate_owner_read'`).Scan(&policies); err != nil {
		t.Fatal(err)
	}
	if policies != 0 {
		t.Error("down left the credgate_owner_read policy behind")
	}
	// Release the emulated Supabase roles' grants in this database so the
	// roles can be dropped by a later run if anyone wants to.
	pgtest.Exec(t, url, `ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated`)
}
