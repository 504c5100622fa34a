-- credgate migration 008_rollout_signals (up)
--
-- What the rollout's signals need to be trusted (docs/rollout.md, "What
-- the guard counts"; docs/telemetry.md, "One definition of success"):
--
-- * The guard's window keeps failures a user can cause apart: a callback's
--   error= (any user can put one on the URL) and a code the platform
--   refused (a made-up one). Each user's count at most once per window,
--   and they count towards the guard's verdict only once there are
--   min_samples of them: one account, or a handful, cannot halt a
--   platform's rollout for everyone.
-- * legacy_flows: the app's own flows credgate saw begin at the app's
--   connect route (the SHA-256 of the app's state, never the state), so
--   that the callback of each, on whichever replica, counts that flow's
--   outcome, and a request to the app's callback path that no flow began
--   counts nowhere.
--
-- Idempotent, whole or nothing. It touches no table of the app's.

ALTER TABLE rollout_outcomes ADD COLUMN IF NOT EXISTS user_failures bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS legacy_flows (
    state_hash bytea       PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    platform   text        NOT NULL,
    user_id    uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS legacy_flows_expires_at_idx ON legacy_flows (expires_at);

ALTER TABLE legacy_flows ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'REVOKE ALL ON legacy_flows FROM anon, authenticated';
    END IF;
END
$$;
