package vault

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RenewalLease is the committed mark of a renewal in flight
// (renewal_leases, migration 005): taken before the platform is called,
// deleted in the transaction that stores the platform's answer. While it
// is live, no other process renews the account, whatever happened to the
// connection that held the account's row lock.
type RenewalLease struct {
	AccountID string
	Owner     string
}

// TakeRenewalLease takes the account's lease for d unless another owner
// holds a live one, in its own statement (committed at once, so that it
// outlives any transaction the caller opens next). left is how long that
// other lease still runs when it is not taken (measured on the database's
// clock, which dates leases). tookOver is true when the lease taken
// replaced one that had run out without being released: a renewal that
// did not finish (its process died), whose platform answer may have been
// lost.
func TakeRenewalLease(ctx context.Context, db DB, accountID, owner string, d time.Duration) (taken bool, left time.Duration, tookOver bool, err error) {
	err = db.QueryRow(ctx, `WITH taken AS (
			INSERT INTO renewal_leases (account_id, owner, until) VALUES ($1, $2, now() + $3::interval)
			ON CONFLICT (account_id) DO UPDATE SET owner = EXCLUDED.owner, taken_at = now(), until = EXCLUDED.until, answered_at = NULL
				WHERE renewal_leases.until < now() OR renewal_leases.owner = EXCLUDED.owner
			RETURNING xmax <> 0 AS replaced)
		SELECT EXISTS (SELECT 1 FROM taken), coalesce((SELECT replaced FROM taken), false),
		       coalesce((SELECT greatest(until - now(), interval '0') FROM renewal_leases WHERE account_id = $1 AND owner <> $2), interval '0')`,
		accountID, owner, d).Scan(&taken, &tookOver, &left)
	if err != nil {
		return false, 0, false, fmt.Errorf("taking renewal lease: %w", err)
	}
	return taken, left, tookOver, nil
}

// MarkAnswered records, on the lease, that the platform has answered and
// the answer is not stored yet, extending the lease to d from now: the
// holder is retrying the store.
func (l RenewalLease) MarkAnswered(ctx context.Context, db DB, d time.Duration) error {
	_, err := db.Exec(ctx, `UPDATE renewal_leases SET answered_at = coalesce(answered_at, now()), until = greatest(until, now() + $3::interval)
		WHERE account_id = $1 AND owner = $2`, l.AccountID, l.Owner, d)
	if err != nil {
		return fmt.Errorf("marking renewal lease answered: %w", err)
	}
	return nil
}

// Release deletes the lease if this owner still holds it.
func (l RenewalLease) Release(ctx context.Context, db DB) error {
	if _, err := db.Exec(ctx, releaseLeaseSQL, l.AccountID, l.Owner); err != nil {
		return fmt.Errorf("releasing renewal lease: %w", err)
	}
	return nil
}

// QueueRelease queues Release on b, so that the lease goes in the
// transaction that stores the renewal.
func (l RenewalLease) QueueRelease(b *pgx.Batch) { b.Queue(releaseLeaseSQL, l.AccountID, l.Owner) }

const releaseLeaseSQL = `DELETE FROM renewal_leases WHERE account_id = $1 AND owner = $2`
