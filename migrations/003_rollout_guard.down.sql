-- credgate migration 003_rollout_guard (down)
--
-- Drops the guard's window and latch. A halt in force is forgotten with
-- it: after a rollback the flag alone decides again.

DROP TABLE IF EXISTS rollout_halts;
DROP TABLE IF EXISTS rollout_outcomes;
