-- credgate migration 004_rollout_decisions (down)
--
-- Drops the shared count of rollout decisions; nothing else reads it.

DROP TABLE IF EXISTS rollout_decisions;
