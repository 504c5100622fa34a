-- credgate migration 007_audit_lifecycle (up)
--
-- An audit log with a lifecycle:
--
-- * events: how many events one row stands for. The app's back end reads
--   tokens hundreds of times a second; each instance now writes one
--   token_read row per account, caller and outcome per window (default a
--   minute) with the count here, instead of a row per read. Every other
--   row stands for one event (the default), and every count of the log
--   (report, the daily roll-up) sums this column.
-- * Two deliberate exceptions to the append-only rule, each opened by a
--   transaction-local setting that names its scope, so that an ordinary
--   UPDATE or DELETE is still refused:
--     - retention (`caddy credgate audit prune`): with
--       credgate.audit_prune set to a timestamp, a DELETE of rows created
--       before it is allowed;
--     - erasure (`caddy credgate erase-user`): with credgate.audit_erase
--       set to a user id, an UPDATE of that user's rows that only clears
--       user_id and drops details.account_id is allowed.
--   The settings are set with set_config(…, true), which lasts until the
--   transaction ends. They guard against accidents and quiet edits, as the
--   trigger always did, not against the table's owner, who could drop the
--   trigger; only roles with DELETE or UPDATE on the table can use them.
--
-- Like 001 to 006, every statement is idempotent and the file applies
-- whole or not at all. It touches no table of the app's.

SET lock_timeout = '5s';

-- A constant default: metadata only, no rewrite of a large log.
ALTER TABLE credential_audit_log ADD COLUMN IF NOT EXISTS events integer NOT NULL DEFAULT 1;
COMMENT ON COLUMN credential_audit_log.events IS 'credgate: how many events this row stands for (token reads are counted per window)';

-- NOT VALID: every existing row holds the default, and skipping the scan
-- takes no long lock on a large log.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'credential_audit_log_events_check'
                     AND conrelid = 'credential_audit_log'::regclass) THEN
        ALTER TABLE credential_audit_log ADD CONSTRAINT credential_audit_log_events_check
            CHECK (events > 0) NOT VALID;
    END IF;
END
$$;

-- The trigger 001 created stays; its function now lets the two scoped
-- exceptions through. A setting that does not parse as its type makes
-- the statement fail, never pass.
CREATE OR REPLACE FUNCTION credgate_audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    prune_before text := nullif(current_setting('credgate.audit_prune', true), '');
    erase_user   text := nullif(current_setting('credgate.audit_erase', true), '');
BEGIN
    IF TG_OP = 'DELETE' AND prune_before IS NOT NULL
       AND OLD.created_at < prune_before::timestamptz THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND erase_user IS NOT NULL
       AND OLD.user_id = erase_user::uuid AND NEW.user_id IS NULL
       AND NEW.details = OLD.details - 'account_id'
       AND to_jsonb(NEW) - 'user_id' - 'details' = to_jsonb(OLD) - 'user_id' - 'details' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'credential_audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Nothing for Supabase's API roles here: no new table, sequence or
-- function. The column is covered by the audit log's privileges, which
-- 001 revoked from anon and authenticated, and CREATE OR REPLACE keeps the
-- function's privileges (a trigger function cannot be called directly).
