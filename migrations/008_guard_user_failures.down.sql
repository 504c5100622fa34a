-- credgate migration 008_guard_user_failures (down)

ALTER TABLE rollout_outcomes DROP COLUMN IF EXISTS user_failures;
