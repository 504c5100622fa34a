-- credgate migration 008_rollout_signals (down)

DROP TABLE IF EXISTS legacy_flows;
ALTER TABLE IF EXISTS rollout_outcomes DROP COLUMN IF EXISTS user_failures;
