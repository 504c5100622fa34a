package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// supabaseRolesLock serialises the creation of the Supabase roles across
// every test process on the server (advisory locks are per database: all
// take it in the server's own database, ServerURL).
const supabaseRolesLock int64 = 0x6367737570615f72 // "cgsupa_r"

// SupabaseRoles are the API roles of a Supabase project: PostgREST
// switches to anon for requests without a user, to authenticated for a
// signed-in user's JWT, and to service_role for the service key, which
// bypasses row level security.
var SupabaseRoles = []string{"anon", "authenticated", "service_role"}

// SupabaseAppPolicies are the policies the app in SupabaseDatabase has on
// its social_accounts, as a Supabase app typically writes them: each user
// reads, adds, changes and removes their own accounts.
var SupabaseAppPolicies = []string{
	"Users can view their own social accounts",
	"Users can insert their own social accounts",
	"Users can update their own social accounts",
	"Users can delete their own social accounts",
}

// EnsureSupabaseRoles creates, once per cluster, the roles a Supabase
// project has: anon, authenticated and service_role, NOLOGIN and
// NOINHERIT as Supabase creates them, service_role with BYPASSRLS, each
// granted to the server's user as Supabase grants them to postgres.
// Roles are cluster-wide and tests run in parallel, in several processes:
// the work is done under an advisory lock, and a role another helper
// created meanwhile (without that lock) is taken as it is and given the
// attributes above.
func EnsureSupabaseRoles(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server := ServerURL()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("pgtest: no PostgreSQL answers at %s=%s: %v (start PostgreSQL or point %s at one)",
			EnvURL, redact(server), err, EnvURL)
	}
	defer admin.Close(ctx)
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatalf("pgtest: creating the Supabase roles: %v", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, supabaseRolesLock); err != nil {
		t.Fatalf("pgtest: creating the Supabase roles: %v", err)
	}
	_, err = tx.Exec(ctx, `DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created by an earlier run or, just now, by a helper without the lock
        END;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r AND (rolcanlogin OR rolinherit)) THEN
            EXECUTE format('ALTER ROLE %I NOLOGIN NOINHERIT', r);
        END IF;
        IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', r, current_user);
        END IF;
    END LOOP;
    IF NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role') THEN
        ALTER ROLE service_role BYPASSRLS;
    END IF;
END
$$`)
	if err != nil {
		t.Fatalf("pgtest: creating the Supabase roles: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("pgtest: creating the Supabase roles: %v", err)
	}
}

// supabaseProject is what a Supabase project has before credgate, as far
// as credgate's migrations and the API roles can tell: the public schema's
// privileges and default privileges for the API roles, the auth schema
// with users and auth.uid(), and the app's social_accounts, owned by the
// server's user (Supabase's postgres), with row level security on and the
// app's own policies. The table gets the API roles' privileges from the
// default privileges, as every table the app creates in public does.
const supabaseProject = `
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;

CREATE SCHEMA auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE TABLE auth.users (
    id         uuid PRIMARY KEY,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Supabase's own definition: the sub claim of the request's JWT, which
-- PostgREST sets per request (request.jwt.claim.sub, or request.jwt.claims
-- on newer versions).
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;

-- The app's table, as the app created it (credgate's expiry column is
-- named differently from the app's own).
CREATE TABLE public.social_accounts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    platform         text NOT NULL,
    platform_user_id text,
    username         text,
    access_token     text,
    refresh_token    text,
    token_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, platform)
);
CREATE FUNCTION public.set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END
$$;
CREATE TRIGGER social_accounts_set_updated_at BEFORE UPDATE ON public.social_accounts
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

ALTER TABLE public.social_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own social accounts" ON public.social_accounts
    FOR SELECT TO authenticated USING (auth.uid() = user_id);
CREATE POLICY "Users can insert their own social accounts" ON public.social_accounts
    FOR INSERT TO authenticated WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can update their own social accounts" ON public.social_accounts
    FOR UPDATE TO authenticated USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id);
CREATE POLICY "Users can delete their own social accounts" ON public.social_accounts
    FOR DELETE TO authenticated USING (auth.uid() = user_id);
`

// SupabaseDatabase creates a fresh database shaped like a Supabase project
// before credgate (see EnsureSupabaseRoles and supabaseProject: the API
// roles, the auth schema with auth.users and auth.uid(), Supabase's
// default privileges in public, and the app's social_accounts with row
// level security and SupabaseAppPolicies), dropped when the test ends, and
// returns its URL. credgate's migrations are not run: every up file's
// Supabase branch finds what it looks for (roles anon and authenticated,
// schema auth). The server's user plays Supabase's postgres: it owns the
// app's table and runs the migrations.
func SupabaseDatabase(t testing.TB) string {
	t.Helper()
	EnsureSupabaseRoles(t)
	u := EmptyDatabase(t)
	Exec(t, u, supabaseProject)
	return u
}
