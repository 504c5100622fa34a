-- credgate migration 003_rollout_guard (up)
--
-- What the guarded rollout shares between replicas: the outcomes of both
-- arms in short time buckets, so every replica (and the `rollout status`
-- command) sees the same sliding window, and one latch per platform, so a
-- halt decided by one replica holds in all of them until an operator
-- resumes it.
--
-- Like 001 and 002, every statement is idempotent and the file applies
-- whole or not at all. It touches no table of the app's.

-- Finished flows per platform, arm and 10-second bucket, summed over
-- replicas. Rows older than a day are pruned by the guard itself.
CREATE TABLE IF NOT EXISTS rollout_outcomes (
    platform  text        NOT NULL,
    arm       text        NOT NULL CHECK (arm IN ('new', 'legacy')),
    bucket    timestamptz NOT NULL,
    successes bigint      NOT NULL DEFAULT 0,
    failures  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, bucket, arm)
);
CREATE INDEX IF NOT EXISTS rollout_outcomes_bucket_idx ON rollout_outcomes (bucket);

-- The latch. halted_at is set when the guard trips and cleared by a
-- resume; resumed_at starts a fresh window, so the outcomes that caused
-- the halt cannot trip it again. The rates and samples are the ones the
-- halt was decided on.
CREATE TABLE IF NOT EXISTS rollout_halts (
    platform        text PRIMARY KEY,
    halted_at       timestamptz,
    reason          text,
    new_success     double precision,
    new_samples     bigint,
    legacy_success  double precision,
    legacy_samples  bigint,
    resumed_at      timestamptz,
    resumed_by      text
);

ALTER TABLE rollout_outcomes ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollout_halts    ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'REVOKE ALL ON rollout_outcomes, rollout_halts FROM anon, authenticated';
    END IF;
END
$$;
