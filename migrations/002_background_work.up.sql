-- credgate migration 002_background_work (up)
--
-- What the background loops need: each refresh job remembers the
-- credentials version it was scheduled for, so the scheduler never queues
-- the same token twice (at most one background refresh per token
-- lifetime), and a daily roll-up of the audit log keeps reports over
-- months fast without scanning every event.
--
-- Like 001, every statement is idempotent and the file applies whole or
-- not at all. It touches no table of the app's.

-- Jobs written before this migration have no version: the scheduler
-- treats them like any other finished or open job.
ALTER TABLE token_refresh_queue ADD COLUMN IF NOT EXISTS credentials_version bigint;
CREATE INDEX IF NOT EXISTS token_refresh_queue_account_version_idx
    ON token_refresh_queue (social_account_id, credentials_version);

-- One row per day, action, status, platform and flow. Empty strings stand
-- for "none" so that they can be part of the primary key.
CREATE TABLE IF NOT EXISTS credential_audit_daily (
    day             date   NOT NULL,
    action          text   NOT NULL,
    status          text   NOT NULL,
    platform        text   NOT NULL DEFAULT '',
    flow            text   NOT NULL DEFAULT '',
    events          bigint NOT NULL,
    duration_ms_sum bigint NOT NULL DEFAULT 0,
    duration_count  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, action, status, platform, flow)
);

-- The days the roll-up has finished; a day is rolled up once it is over
-- (UTC), and again if someone asks for it explicitly.
CREATE TABLE IF NOT EXISTS credential_audit_rollups (
    day          date PRIMARY KEY,
    events       bigint NOT NULL,
    rolled_up_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE credential_audit_daily   ENABLE ROW LEVEL SECURITY;
ALTER TABLE credential_audit_rollups ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'REVOKE ALL ON credential_audit_daily, credential_audit_rollups FROM anon, authenticated';
    END IF;
END
$$;
