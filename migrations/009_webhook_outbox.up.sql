-- credgate migration 009_webhook_outbox (up)
--
-- The account events credgate tells the app about (docs/webhooks.md):
-- a user connected or disconnected, an account nears the end of a token
-- only the user can renew, needs the user again, had its grant revoked,
-- or could not be renewed. Each event is written here in the same
-- transaction as the change it reports, so an event exists exactly when
-- its change committed, whatever happens to credgate or the app after.
-- Any replica delivers from here (FOR UPDATE SKIP LOCKED and a lease),
-- oldest first per account, at least once; after retry_for an event
-- that could not be delivered stays as failed, for the operator to see.
--
-- No foreign key to social_accounts: an event is about a change that
-- already committed, and is delivered whatever happens to the row after
-- (erase-user deletes a user's rows and their events together).
--
-- Idempotent, whole or nothing. It touches no table of the app's.

CREATE TABLE IF NOT EXISTS credgate_webhook_outbox (
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    kind            text        NOT NULL,
    account_id      uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    platform        text        NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT statement_timestamp(),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    finished_at     timestamptz
);
-- The head of each account's queue, and what is due.
CREATE INDEX IF NOT EXISTS credgate_webhook_outbox_pending_idx ON credgate_webhook_outbox (account_id, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS credgate_webhook_outbox_due_idx ON credgate_webhook_outbox (next_attempt_at) WHERE status = 'pending';
-- The prune of finished events, and erase-user.
CREATE INDEX IF NOT EXISTS credgate_webhook_outbox_finished_idx ON credgate_webhook_outbox (finished_at) WHERE status <> 'pending';
CREATE INDEX IF NOT EXISTS credgate_webhook_outbox_user_idx ON credgate_webhook_outbox (user_id);

ALTER TABLE credgate_webhook_outbox ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'REVOKE ALL ON credgate_webhook_outbox FROM anon, authenticated';
        -- and its id sequence (anon could read how many events there were).
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM anon, authenticated', pg_get_serial_sequence('credgate_webhook_outbox', 'id'));
    END IF;
END
$$;
