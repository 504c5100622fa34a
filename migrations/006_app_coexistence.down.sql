-- credgate migration 006_app_coexistence (down)
--
-- Removes the settings and the record of the app's plaintext. The app's
-- own columns and rows stay.

SET lock_timeout = '5s';

DROP TABLE IF EXISTS credgate_settings;
DROP TABLE IF EXISTS backend_reads;

DO $$
DECLARE
    col text;
BEGIN
    FOREACH col IN ARRAY ARRAY['app_token_fingerprint', 'app_token_current'] LOOP
        IF EXISTS (SELECT 1 FROM pg_attribute a
                   WHERE a.attrelid = 'social_accounts'::regclass AND a.attname = col AND NOT a.attisdropped
                     AND col_description(a.attrelid, a.attnum) LIKE 'credgate:%') THEN
            EXECUTE format('ALTER TABLE social_accounts DROP COLUMN %I', col);
        END IF;
    END LOOP;
END
$$;

DROP FUNCTION IF EXISTS credgate_app_token_fingerprint(text, text);
