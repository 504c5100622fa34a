-- credgate migration 007_audit_lifecycle (down)
--
-- Restores the audit log as 001 made it: strictly append-only, one event
-- per row. Rows that counted several token reads then count as one each.
-- Nothing of the app's is touched.

SET lock_timeout = '5s';

-- 001's function, which refuses every UPDATE and DELETE. The table and
-- the function belong to 001, whose down may already have dropped them
-- when the files are run again by hand: then there is nothing to restore.
DO $$
BEGIN
    IF to_regclass('credential_audit_log') IS NOT NULL THEN
        EXECUTE $fn$
            CREATE OR REPLACE FUNCTION credgate_audit_log_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $body$
            BEGIN
                RAISE EXCEPTION 'credential_audit_log is append-only (% refused)', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $body$
        $fn$;
    END IF;
END
$$;

ALTER TABLE IF EXISTS credential_audit_log DROP CONSTRAINT IF EXISTS credential_audit_log_events_check;
ALTER TABLE IF EXISTS credential_audit_log DROP COLUMN IF EXISTS events;
