-- credgate migration 004_rollout_decisions (up)
--
-- Rollout decisions at the app's connect route per platform, arm, reason
-- and 10-second bucket, summed over replicas, so that `caddy credgate
-- rollout status` (which reads only the database) can show why users went
-- where they did, most of all how many arrived with no identity credgate
-- recognises (reason no_identity): a rollout at 100 % moves nobody while
-- that is everyone. Every replica adds its counts every 10 seconds; rows
-- older than a day are pruned by the same flush.
--
-- Like 001 to 003, every statement is idempotent and the file applies
-- whole or not at all. It touches no table of the app's.

CREATE TABLE IF NOT EXISTS rollout_decisions (
    platform  text        NOT NULL,
    arm       text        NOT NULL CHECK (arm IN ('new', 'legacy')),
    reason    text        NOT NULL,
    bucket    timestamptz NOT NULL,
    decisions bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (platform, bucket, arm, reason)
);
CREATE INDEX IF NOT EXISTS rollout_decisions_bucket_idx ON rollout_decisions (bucket);

ALTER TABLE rollout_decisions ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'REVOKE ALL ON rollout_decisions FROM anon, authenticated';
    END IF;
END
$$;
