package pgtest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
)

// SupabaseDatabase gives what credgate's migrations and the API roles see
// on a Supabase project, and many tests may ask for one at once (the
// roles are cluster-wide).
func TestSupabaseDatabase(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			checkSupabaseDatabase(t, SupabaseDatabase(t))
		})
	}
}

func checkSupabaseDatabase(t *testing.T, url string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	for _, role := range SupabaseRoles {
		var login, inherit, bypass bool
		if err := conn.QueryRow(ctx, `SELECT rolcanlogin, rolinherit, rolbypassrls FROM pg_roles WHERE rolname = $1`, role).Scan(&login, &inherit, &bypass); err != nil {
			t.Fatalf("role %s: %v", role, err)
		}
		if login || inherit || bypass != (role == "service_role") {
			t.Errorf("role %s: login=%v inherit=%v bypassrls=%v; want NOLOGIN NOINHERIT, BYPASSRLS only for service_role", role, login, inherit, bypass)
		}
		// The default privileges reach every new public table, sequence
		// and function, and the app's table was created under them.
		for _, q := range []string{
			`SELECT has_schema_privilege($1, 'public', 'USAGE')`,
			`SELECT has_schema_privilege($1, 'auth', 'USAGE')`,
			`SELECT has_table_privilege($1, 'social_accounts', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')`,
			`SELECT has_function_privilege($1, 'auth.uid()', 'EXECUTE')`,
		} {
			var has bool
			if err := conn.QueryRow(ctx, q, role).Scan(&has); err != nil {
				t.Fatal(err)
			}
			if !has {
				t.Errorf("%s: false for %s", q, role)
			}
		}
	}
	rows, err := conn.Query(ctx, `SELECT defaclobjtype::text FROM pg_default_acl
		WHERE defaclnamespace = 'public'::regnamespace AND defaclrole = current_user::regrole`)
	if err != nil {
		t.Fatal(err)
	}
	kinds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []string{"S", "f", "r"}) {
		t.Errorf("default privileges in public for %v, want sequences, functions and tables", kinds)
	}

	// auth.uid() reads the JWT's sub as PostgREST sets it, either way.
	for _, setting := range []string{
		`SELECT set_config('request.jwt.claim.sub', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', false)`,
		`SELECT set_config('request.jwt.claims', '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}', false)`,
	} {
		if _, err := conn.Exec(ctx, `RESET ALL`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, setting); err != nil {
			t.Fatal(err)
		}
		var uid string
		if err := conn.QueryRow(ctx, `SELECT auth.uid()::text`).Scan(&uid); err != nil {
			t.Fatal(err)
		}
		if uid != "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa" {
			t.Errorf("after %s, auth.uid() = %s", setting, uid)
		}
	}

	// The app's table: row level security on, its own policies, and not
	// one of credgate's objects yet.
	var rls, credgate bool
	if err := conn.QueryRow(ctx, `SELECT relrowsecurity, EXISTS (SELECT 1 FROM pg_class WHERE relname = 'oauth_states')
		FROM pg_class WHERE oid = 'public.social_accounts'::regclass`).Scan(&rls, &credgate); err != nil {
		t.Fatal(err)
	}
	if !rls || credgate {
		t.Errorf("social_accounts rls=%v, credgate's tables present=%v; want RLS on and no credgate", rls, credgate)
	}
	rows, err = conn.Query(ctx, `SELECT policyname FROM pg_policies WHERE schemaname = 'public' AND tablename = 'social_accounts' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	policies, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(SupabaseAppPolicies))
	if !slices.Equal(policies, want) {
		t.Errorf("policies on social_accounts: %v, want %v", policies, want)
	}
}
