-- credgate migration 008_guard_user_failures (up)
--
-- The rollout guard's window keeps failures a user can cause apart: a
-- callback's error= (any user can put one on the URL) and a code the
-- platform refused (a made-up one). Each user's count at most once per
-- window, and they count towards the guard's verdict only once there
-- are min_samples of them: one account, or a handful, cannot halt a
-- platform's rollout for everyone (docs/rollout.md, "What the guard
-- counts").
--
-- Idempotent, whole or nothing. It touches no table of the app's.

ALTER TABLE rollout_outcomes ADD COLUMN IF NOT EXISTS user_failures bigint NOT NULL DEFAULT 0;
