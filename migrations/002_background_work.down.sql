-- credgate migration 002_background_work (down)
--
-- Drops the roll-up (it can be rebuilt from credential_audit_log) and the
-- job version column. Nothing of the app's is touched.

DROP TABLE IF EXISTS credential_audit_rollups;
DROP TABLE IF EXISTS credential_audit_daily;
DROP INDEX IF EXISTS token_refresh_queue_account_version_idx;
-- token_refresh_queue itself belongs to 001; its down may already have
-- dropped it when both run in one rollback.
ALTER TABLE IF EXISTS token_refresh_queue DROP COLUMN IF EXISTS credentials_version;
