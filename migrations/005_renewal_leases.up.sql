-- credgate migration 005_renewal_leases (up)
--
-- A renewal in flight, committed before credgate calls the platform: the
-- account's row lock dies with the connection that holds it (a database
-- restart, a partition), but a platform that rotates refresh tokens
-- (Twitter/X) has by then issued a new one, and a second renewal with the
-- old one would make X revoke the whole grant. While a lease is live, no
-- other process calls the platform for that account; the holder stores
-- the platform's answer, retrying on fresh connections, and deletes the
-- lease in the transaction that stores it. A holder that dies leaves its
-- lease to run out (docs/background.md, "Faults").
--
-- Like 001 to 004, every statement is idempotent and the file applies
-- whole or not at all. It touches no table of the app's.

CREATE TABLE IF NOT EXISTS renewal_leases (
    account_id  text        PRIMARY KEY,
    owner       text        NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    until       timestamptz NOT NULL,
    -- Set when the platform has answered and the answer is not stored
    -- yet: an operator can see which grants are at stake.
    answered_at timestamptz
);

ALTER TABLE renewal_leases ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
       AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
        EXECUTE 'REVOKE ALL ON renewal_leases FROM anon, authenticated';
    END IF;
END
$$;
