-- credgate migration 001_improve_credentials (up)
--
-- Phase 1 of the credential migration: encrypted storage next to the legacy
-- columns, single-use OAuth state, an append-only audit log and a token
-- refresh queue.
--
-- This file is complete on its own: it can be pasted into the Supabase SQL
-- editor, run with psql, or applied by `caddy credgate migrate up`. Every
-- statement is idempotent, so running it twice is harmless. Sent as one
-- query string it runs in a single implicit transaction: it applies whole or
-- not at all.
--
-- The app's existing table is never rewritten: added columns either have no
-- default or a constant default, which PostgreSQL 11+ stores as metadata only.

-- Altering the app's table needs a brief exclusive lock. Give up after a
-- few seconds rather than queue every app query behind a long-running
-- transaction; run it again when the table is quiet.
SET lock_timeout = '5s';

-- The legacy shape, created only for fresh databases (tests, the demo). In
-- production the app's own table already exists and is left as it is.
CREATE TABLE IF NOT EXISTS social_accounts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid NOT NULL,
    platform         text NOT NULL,
    platform_user_id text,
    username         text,
    access_token     text,
    refresh_token    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, platform)
);

-- The app's table may already have columns of its own by credgate's names.
-- expires_at, status and scopes are names apps often use for their own
-- token expiry, account state or scopes: for those, credgate's column is
-- named credgate_expires_at, credgate_status or credgate_scopes instead,
-- and credgate's statements follow (docs/schema.md). Any other of
-- credgate's names, or one of those credgate_ names, already taken by the
-- app stops the migration here, before anything changed: ADD COLUMN IF NOT
-- EXISTS would silently share it, credgate's CHECK constraints would then
-- reject the app's values, and the rollback would drop the app's data.
-- credgate marks its columns with a comment; that is how they are told
-- apart, here and everywhere.
DO $$
DECLARE
    col        text;
    found_type text;
BEGIN
    FOREACH col IN ARRAY ARRAY['credentials_encrypted', 'credentials_key_id', 'credentials_version',
                               'last_refreshed_at', 'connected_via',
                               'credgate_expires_at', 'credgate_status', 'credgate_scopes'] LOOP
        SELECT format_type(a.atttypid, a.atttypmod) INTO found_type
        FROM pg_attribute a
        WHERE a.attrelid = 'social_accounts'::regclass AND a.attname = col AND NOT a.attisdropped
          AND coalesce(col_description(a.attrelid, a.attnum), '') NOT LIKE 'credgate:%';
        IF found_type IS NOT NULL THEN
            RAISE EXCEPTION 'social_accounts.% already exists (%) and is not credgate''s: rename the app''s column, then run the migration again', col, found_type;
        END IF;
    END LOOP;
END
$$;

-- credgate's columns. Rows the unchanged app keeps inserting get the defaults
-- that describe them truthfully: connected, through the legacy flow.
ALTER TABLE social_accounts
    ADD COLUMN IF NOT EXISTS credentials_encrypted bytea,
    ADD COLUMN IF NOT EXISTS credentials_key_id    integer,
    ADD COLUMN IF NOT EXISTS credentials_version   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_refreshed_at     timestamptz,
    ADD COLUMN IF NOT EXISTS connected_via         text NOT NULL DEFAULT 'legacy';

COMMENT ON COLUMN social_accounts.credentials_encrypted IS 'credgate: the token set, XChaCha20-Poly1305, bound to this row';
COMMENT ON COLUMN social_accounts.credentials_key_id IS 'credgate: id of the master key that sealed credentials_encrypted';
COMMENT ON COLUMN social_accounts.credentials_version IS 'credgate: bumped on every credential write (compare-and-swap guard)';
COMMENT ON COLUMN social_accounts.last_refreshed_at IS 'credgate: last successful refresh';
COMMENT ON COLUMN social_accounts.connected_via IS 'credgate: legacy or credgate';

-- expires_at, status and scopes, under credgate_ names where the app has
-- its own; then the status CHECK (NOT VALID: ADD CONSTRAINT has no IF NOT
-- EXISTS, and skipping the scan of existing rows, which all hold the
-- default, takes no long lock) and the refresh scheduler's index of live
-- credentials close to expiry, on whichever names the columns took.
DO $$
DECLARE
    spec       text[];
    col        text;
    status_col text;
    expiry_col text;
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ['expires_at', 'timestamptz', 'when the access token expires'],
        ['status', 'text NOT NULL DEFAULT ''connected''', 'connected, expiring, needs_reauth, revoked or disconnected'],
        ['scopes', 'text[]', 'scopes granted']] LOOP
        col := spec[1];
        IF EXISTS (SELECT 1 FROM pg_attribute a
                   WHERE a.attrelid = 'social_accounts'::regclass AND a.attname = col AND NOT a.attisdropped
                     AND coalesce(col_description(a.attrelid, a.attnum), '') NOT LIKE 'credgate:%') THEN
            col := 'credgate_' || col;
        END IF;
        EXECUTE format('ALTER TABLE social_accounts ADD COLUMN IF NOT EXISTS %I %s', col, spec[2]);
        EXECUTE format('COMMENT ON COLUMN social_accounts.%I IS %L', col, 'credgate: ' || spec[3]);
        IF spec[1] = 'status' THEN
            status_col := col;
        ELSIF spec[1] = 'expires_at' THEN
            expiry_col := col;
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'social_accounts_credgate_status_check'
                     AND conrelid = 'social_accounts'::regclass) THEN
        EXECUTE format('ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_credgate_status_check
            CHECK (%I IN (''connected'', ''expiring'', ''needs_reauth'', ''revoked'', ''disconnected'')) NOT VALID', status_col);
    END IF;
    EXECUTE format('CREATE INDEX IF NOT EXISTS social_accounts_expires_at_idx
        ON social_accounts (%I) WHERE %I IN (''connected'', ''expiring'')', expiry_col, status_col);
END
$$;

-- ADD CONSTRAINT has no IF NOT EXISTS; NOT VALID skips the scan of existing
-- rows (they all hold the default above) and takes no long lock.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'social_accounts_credgate_connected_via_check'
                     AND conrelid = 'social_accounts'::regclass) THEN
        ALTER TABLE social_accounts ADD CONSTRAINT social_accounts_credgate_connected_via_check
            CHECK (connected_via IN ('legacy', 'credgate')) NOT VALID;
    END IF;
END
$$;

-- Key rotation looks for blobs not yet under the primary key.
CREATE INDEX IF NOT EXISTS social_accounts_credentials_key_id_idx
    ON social_accounts (credentials_key_id) WHERE credentials_encrypted IS NOT NULL;

-- Single-use OAuth state. Only a SHA-256 of the state is stored, so a
-- database reader cannot replay a flow in progress; the PKCE verifier is
-- encrypted. A state is consumed with DELETE ... RETURNING.
CREATE TABLE IF NOT EXISTS oauth_states (
    state_hash              bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    user_id                 uuid NOT NULL,
    platform                text NOT NULL,
    flow                    text NOT NULL DEFAULT 'new' CHECK (flow IN ('new', 'legacy')),
    code_verifier_encrypted bytea,
    browser_binding         bytea,
    return_to               text,
    redirect_uri            text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz NOT NULL DEFAULT now() + interval '10 minutes'
);
CREATE INDEX IF NOT EXISTS oauth_states_expires_at_idx ON oauth_states (expires_at);

-- Every credential event. Append-only: the trigger below refuses UPDATE and
-- DELETE for every role, so the record cannot be quietly edited. details
-- never holds a secret.
CREATE TABLE IF NOT EXISTS credential_audit_log (
    id          bigserial PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    user_id     uuid,
    platform    text,
    action      text NOT NULL,
    status      text NOT NULL CHECK (status IN ('success', 'failed')),
    flow        text CHECK (flow IN ('new', 'legacy')),
    duration_ms integer,
    error_code  text,
    trace_id    text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS credential_audit_log_created_at_idx ON credential_audit_log (created_at);
CREATE INDEX IF NOT EXISTS credential_audit_log_user_idx ON credential_audit_log (user_id, created_at);

CREATE OR REPLACE FUNCTION credgate_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credential_audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE OR REPLACE TRIGGER credential_audit_log_append_only
    BEFORE UPDATE OR DELETE ON credential_audit_log
    FOR EACH ROW EXECUTE FUNCTION credgate_audit_log_append_only();

-- Work queue for token refresh, claimed with FOR UPDATE SKIP LOCKED leases.
-- At most one open (pending or running) job per account.
CREATE TABLE IF NOT EXISTS token_refresh_queue (
    id                bigserial PRIMARY KEY,
    social_account_id uuid NOT NULL REFERENCES social_accounts (id) ON DELETE CASCADE,
    run_at            timestamptz NOT NULL DEFAULT now(),
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    locked_by         text,
    locked_until      timestamptz,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS token_refresh_queue_open_job_idx
    ON token_refresh_queue (social_account_id) WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS token_refresh_queue_due_idx
    ON token_refresh_queue (run_at) WHERE status IN ('pending', 'running');

-- Fingerprints (never the keys) of the master keys in use, so a wrong
-- ENCRYPTION_MASTER_KEY is refused at start instead of at the first decrypt.
CREATE TABLE IF NOT EXISTS encryption_keys (
    id          integer PRIMARY KEY,
    fingerprint bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

-- Row level security. With RLS on and no policy, only the table owner (and
-- roles with BYPASSRLS, such as Supabase's service_role) see rows. credgate
-- connects as one of those; end users never read these tables directly.
ALTER TABLE oauth_states         ENABLE ROW LEVEL SECURITY;
ALTER TABLE credential_audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE token_refresh_queue  ENABLE ROW LEVEL SECURITY;
ALTER TABLE encryption_keys      ENABLE ROW LEVEL SECURITY;

-- Supabase only: the guard keeps this file runnable on plain PostgreSQL.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        -- Supabase's default privileges grant everything on new public
        -- tables to the API roles; RLS does not cover TRUNCATE, so take it
        -- all back.
        EXECUTE 'REVOKE ALL ON oauth_states, credential_audit_log, token_refresh_queue, encryption_keys FROM anon, authenticated';
        EXECUTE format('REVOKE ALL ON SEQUENCE %s, %s FROM anon, authenticated', pg_get_serial_sequence('credential_audit_log', 'id'), pg_get_serial_sequence('token_refresh_queue', 'id'));
        -- Users may read their own accounts. RLS on social_accounts itself
        -- is the app's decision and is not switched on here: turning it on
        -- would change what the unchanged app can write.
        IF NOT EXISTS (SELECT 1 FROM pg_policies
                       WHERE tablename = 'social_accounts' AND policyname = 'credgate_owner_read') THEN
            EXECUTE 'CREATE POLICY credgate_owner_read ON social_accounts FOR SELECT TO authenticated USING (auth.uid() = user_id)';
        END IF;
    END IF;
END
$$;
