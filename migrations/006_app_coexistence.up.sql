-- credgate migration 006_app_coexistence (up)
--
-- What lets credgate and the unchanged app share social_accounts through
-- the whole migration, both ways:
--
-- * credgate_settings: the operator's decisions every replica and every
--   command must see alike: transition mode (credgate also writes the
--   app's plaintext columns), whether the app still renews its own rows,
--   and the app's own expiry column.
-- * app_token_fingerprint / app_token_current: what credgate last knew of
--   the app's plaintext columns. A plaintext whose fingerprint differs
--   from the one recorded was written by the app since (a reconnect
--   through the legacy flow after a rollback): the newest token wins, so
--   credgate takes it as current and no purge clears it. The fingerprint
--   exists only while the plaintext it describes is in the same row.
-- * backend_reads: how often the app's back end asked credgate for a
--   token (token API, egress), per platform and minute, summed over every
--   replica, so an operator can see the back end reads through credgate
--   before any percentage rises.
--
-- Like 001 to 005, every statement is idempotent and the file applies
-- whole or not at all.

SET lock_timeout = '5s';

CREATE TABLE IF NOT EXISTS credgate_settings (
    name       text PRIMARY KEY CHECK (name IN ('transition_mode', 'app_refresh', 'app_expiry_column', 'app_platform_names')),
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT ''
);
ALTER TABLE credgate_settings ENABLE ROW LEVEL SECURITY;

CREATE TABLE IF NOT EXISTS backend_reads (
    platform text        NOT NULL,
    via      text        NOT NULL CHECK (via IN ('token_api', 'egress')),
    bucket   timestamptz NOT NULL,
    reads    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, via, bucket)
);
CREATE INDEX IF NOT EXISTS backend_reads_bucket_idx ON backend_reads (bucket);
ALTER TABLE backend_reads ENABLE ROW LEVEL SECURITY;

-- As in 001: an app column of the same name stops the migration before
-- anything changed.
DO $$
DECLARE
    col        text;
    found_type text;
BEGIN
    FOREACH col IN ARRAY ARRAY['app_token_fingerprint', 'app_token_current'] LOOP
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

ALTER TABLE social_accounts
    ADD COLUMN IF NOT EXISTS app_token_fingerprint bytea,
    ADD COLUMN IF NOT EXISTS app_token_current     boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN social_accounts.app_token_fingerprint IS 'credgate: SHA-256 of the plaintext access_token/refresh_token as credgate last left them';
COMMENT ON COLUMN social_accounts.app_token_current IS 'credgate: the plaintext columns hold the same tokens as credentials_encrypted';

-- The fingerprint of a plaintext pair; NULL when both are NULL. SQL, so
-- the conditions that use it run in the statements that need them.
CREATE OR REPLACE FUNCTION credgate_app_token_fingerprint(access text, refresh text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN access IS NULL AND refresh IS NULL THEN NULL
                ELSE sha256(convert_to(coalesce(access, ''), 'UTF8') || '\x00'::bytea || convert_to(coalesce(refresh, ''), 'UTF8'))
           END
$$;

-- Rows credgate connected before this migration keep the plaintext the
-- app had before the reconnect: a superseded grant, as credgate has
-- treated it so far. Recording it as seen keeps it from reading as the
-- app's newer token.
UPDATE social_accounts
SET app_token_fingerprint = credgate_app_token_fingerprint(access_token, refresh_token)
WHERE connected_via = 'credgate' AND access_token IS NOT NULL AND app_token_fingerprint IS NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'REVOKE ALL ON credgate_settings, backend_reads FROM anon, authenticated';
        EXECUTE 'REVOKE ALL ON FUNCTION credgate_app_token_fingerprint(text, text) FROM PUBLIC, anon, authenticated';
        -- For projects migrated before 001 revoked them: the audit log's
        -- and the queue's id sequences (anon could read the count of
        -- events, or setval them into collisions).
        EXECUTE format('REVOKE ALL ON SEQUENCE %s, %s FROM anon, authenticated', pg_get_serial_sequence('credential_audit_log', 'id'), pg_get_serial_sequence('token_refresh_queue', 'id'));
        -- The migration runner's version table, created in public by
        -- `migrate up` and so granted to the API roles by Supabase's
        -- default privileges: anon could set the version and break the
        -- next run. Absent when the files are pasted by hand.
        IF to_regclass('credgate_schema_migrations') IS NOT NULL THEN
            EXECUTE 'REVOKE ALL ON credgate_schema_migrations FROM anon, authenticated';
        END IF;
    END IF;
END
$$;
