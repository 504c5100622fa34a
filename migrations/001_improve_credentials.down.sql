-- credgate migration 001_improve_credentials (down)
--
-- The seed's rollback plan: removes exactly what the up file added. The
-- app's social_accounts table, its legacy columns and its rows stay.
--
-- Warning: this drops credentials_encrypted. Accounts connected through
-- credgate hold their tokens only there and will have to reconnect.
-- `caddy credgate migrate down` counts them and asks for --force first.

-- Altering the app's table needs a brief exclusive lock. Give up after a
-- few seconds rather than queue every app query behind a long-running
-- transaction; run it again when the table is quiet.
SET lock_timeout = '5s';

DROP TABLE IF EXISTS token_refresh_queue;
DROP TABLE IF EXISTS oauth_states;
DROP TABLE IF EXISTS credential_audit_log;
DROP TABLE IF EXISTS encryption_keys;
DROP FUNCTION IF EXISTS credgate_audit_log_append_only();

DROP POLICY IF EXISTS credgate_owner_read ON social_accounts;
DROP INDEX IF EXISTS social_accounts_credentials_key_id_idx;
DROP INDEX IF EXISTS social_accounts_expires_at_idx;

ALTER TABLE social_accounts
    DROP CONSTRAINT IF EXISTS social_accounts_credgate_status_check,
    DROP CONSTRAINT IF EXISTS social_accounts_credgate_connected_via_check;

-- Only the columns credgate added (marked by their comment), under
-- whichever name 001 gave them: never a column of the app's that happens
-- to share a name.
DO $$
DECLARE
    col text;
BEGIN
    FOREACH col IN ARRAY ARRAY['credentials_encrypted', 'credentials_key_id', 'credentials_version', 'expires_at',
                               'status', 'scopes', 'last_refreshed_at', 'connected_via',
                               'credgate_expires_at', 'credgate_status', 'credgate_scopes'] LOOP
        IF EXISTS (SELECT 1 FROM pg_attribute a
                   WHERE a.attrelid = 'social_accounts'::regclass AND a.attname = col AND NOT a.attisdropped
                     AND col_description(a.attrelid, a.attnum) LIKE 'credgate:%') THEN
            EXECUTE format('ALTER TABLE social_accounts DROP COLUMN %I', col);
        END IF;
    END LOOP;
END
$$;
