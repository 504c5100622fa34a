package vault

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// zeroUUID sorts before every id: the start of a keyset walk.
const zeroUUID = "00000000-0000-0000-0000-000000000000"

// DefaultBatchSize is how many rows rewrap, backfill and purge handle per
// transaction.
const DefaultBatchSize = 500

// Progress is reported after every batch and returned at the end.
type Progress struct {
	// Done counts rows changed.
	Done int64
	// Skipped counts rows that needed nothing (backfill: blob already
	// matches the plaintext).
	Skipped int64
	// Failed counts rows that could not be processed (a blob that does not
	// decrypt, a stale blob at purge). Each has an audit row.
	Failed int64
	// Newer counts rows left as they are because the app wrote a newer
	// token into its plaintext columns than the one credgate holds
	// (purge, write-back).
	Newer int64
	// Remaining counts rows still to do; only rewrap knows it exactly.
	Remaining int64
	Batches   int
	Elapsed   time.Duration
}

// BatchOptions tune the batch jobs.
type BatchOptions struct {
	// BatchSize defaults to DefaultBatchSize.
	BatchSize int
	// Progress, if set, is called after every batch.
	Progress func(Progress)
	// Worker names this process in the audit details.
	Worker string
}

func (o BatchOptions) size() int {
	if o.BatchSize <= 0 {
		return DefaultBatchSize
	}
	return o.BatchSize
}

// Rewrap re-encrypts, under the primary key, every blob sealed with another
// key: the online half of a key rotation. Rows are taken in batches with
// FOR UPDATE SKIP LOCKED, so several processes can rewrap at once, each
// taking different rows; a run that is stopped loses at most its open batch
// (rolled back) and the next run resumes where the table says. Every batch
// writes one audit row. A blob that fails to decrypt is left untouched and
// counted as failed; the run writes one decrypt_failed summary row for all
// of them (a wrong key would otherwise write one permanent row per blob).
//
// "On another key" is read from the blob's own header as well as from
// credentials_key_id: a blob whose header disagrees with the column (a
// tampered or hand-edited row) is not taken for done.
func (s *Accounts) Rewrap(ctx context.Context, db DB, opt BatchOptions) (Progress, error) {
	settings, err := s.settings.Get(ctx)
	if err != nil {
		return Progress{}, err
	}
	start := time.Now()
	var p Progress
	var undecryptable []string // account ids, pass 0, for the summary row
	// Counted once: a count per batch would cost more than the batch.
	initial, err := s.countNotOnPrimary(ctx, db)
	if err != nil {
		return p, fmt.Errorf("rewrapping credentials: %w", err)
	}
	// Each pass walks the table once in id order (keyset pagination keeps
	// every batch an index range scan). Rows another process held locked
	// are skipped by SKIP LOCKED; the next pass picks up any it left.
	for pass := 0; ; pass++ {
		last := zeroUUID
		passChanged := 0
		for {
			end, changed, bad, err := s.rewrapBatch(ctx, db, settings, last, opt)
			if err != nil {
				return p, fmt.Errorf("rewrapping credentials: %w", err)
			}
			if end == "" {
				break
			}
			last = end
			passChanged += changed
			p.Done += int64(changed)
			if pass == 0 {
				// Undecryptable rows are met again on later passes; count
				// (and audit) them once.
				undecryptable = append(undecryptable, bad...)
				p.Failed += int64(len(bad))
			}
			p.Batches++
			p.Elapsed = time.Since(start)
			if opt.Progress != nil {
				// Approximate while other rewrappers work too; exact at the end.
				p.Remaining = max(0, initial-p.Done-p.Failed)
				opt.Progress(p)
			}
		}
		if passChanged == 0 {
			break
		}
	}
	if len(undecryptable) > 0 {
		const sample = 20
		details := map[string]any{"accounts": len(undecryptable), "during": "rewrap", "worker": opt.Worker,
			"sample_account_ids": undecryptable[:min(sample, len(undecryptable))]}
		if err := AppendAudit(ctx, db, Event{Action: ActionDecryptFailed, Status: Failed, ErrorCode: "decrypt_failed", Details: details}); err != nil {
			return p, fmt.Errorf("rewrapping credentials: %w", err)
		}
	}
	p.Remaining, err = s.countNotOnPrimary(ctx, db)
	p.Elapsed = time.Since(start)
	return p, err
}

// rewrapBatch is one batch of a rewrap, in one transaction: the next
// chunk of ids after after, and in it the rows not on the primary key
// (by column or by the blob's header) that no other process holds,
// re-sealed with their audit row. It returns the chunk's last id ("" once
// the table is walked), the rows it changed, and the ids whose blobs did
// not open (left as they are).
func (s *Accounts) rewrapBatch(ctx context.Context, db DB, settings Settings, after string, opt BatchOptions) (end string, changed int, bad []string, err error) {
	primary := int64(s.keys.PrimaryID())
	header := primaryHeader(s.keys.PrimaryID())
	err = InTx(ctx, db, func(tx pgx.Tx) error {
		// Walk the primary key in fixed chunks and filter inside each: the
		// plan is a pkey range scan whatever the column statistics say
		// (stale ones made "key <> $1" a seq scan).
		if err := tx.QueryRow(ctx, `SELECT c.id::text FROM (SELECT id FROM social_accounts
			WHERE id > $1 ORDER BY id LIMIT $2) c ORDER BY c.id DESC LIMIT 1`, after, opt.size()).Scan(&end); errors.Is(err, pgx.ErrNoRows) {
			end = ""
			return nil
		} else if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id::text, user_id::text, platform, credentials_encrypted, credentials_version
			FROM social_accounts
			WHERE id > $2 AND id <= $3 AND credentials_encrypted IS NOT NULL
			  AND (credentials_key_id IS DISTINCT FROM $1 OR substring(credentials_encrypted FROM 1 FOR 5) <> $4)
			FOR UPDATE SKIP LOCKED`, primary, after, end, header)
		if err != nil {
			return err
		}
		var ids []string
		var blobs [][]byte
		var versions []int64
		for rows.Next() {
			var id, user, platform string
			var blob []byte
			var version int64
			if err := rows.Scan(&id, &user, &platform, &blob, &version); err != nil {
				return err
			}
			// The blob is bound to the provider's platform name.
			b := accountBinding(id, user, settings.Platform(platform))
			plain, _, err := s.keys.Open(PurposeCredentials, blob, b)
			if err != nil {
				bad = append(bad, id)
				continue
			}
			sealed, err := s.keys.Seal(PurposeCredentials, plain, b)
			if err != nil {
				return err
			}
			ids, blobs, versions = append(ids, id), append(blobs, sealed), append(versions, version)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		tag, err := tx.Exec(ctx, `UPDATE social_accounts a SET credentials_encrypted = u.blob, credentials_key_id = $4,
				credentials_version = a.credentials_version + 1
			FROM unnest($1::uuid[], $2::bytea[], $3::bigint[]) AS u(id, blob, version)
			WHERE a.id = u.id AND a.credentials_version = u.version`, ids, blobs, versions, primary)
		if err != nil {
			return err
		}
		changed = int(tag.RowsAffected())
		return AppendAudit(ctx, tx, Event{Action: ActionRewrap, Status: Success, Details: map[string]any{
			"rows": changed, "to_key_id": primary, "worker": opt.Worker}})
	})
	if err != nil {
		return "", 0, nil, err
	}
	return end, changed, bad, nil
}

// primaryHeader is the blob header a blob sealed under id starts with.
func primaryHeader(id uint32) []byte {
	h := make([]byte, headerSize)
	h[0] = blobVersion
	binary.BigEndian.PutUint32(h[1:], id)
	return h
}

// countNotOnPrimary counts blobs still sealed under another key; after a
// complete rewrap it is 0 and the old key can be dropped.
func (s *Accounts) countNotOnPrimary(ctx context.Context, db DB) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT count(*) FROM social_accounts
		WHERE credentials_encrypted IS NOT NULL
		  AND (credentials_key_id IS DISTINCT FROM $1 OR substring(credentials_encrypted FROM 1 FOR 5) <> $2)`,
		int64(s.keys.PrimaryID()), primaryHeader(s.keys.PrimaryID())).Scan(&n)
	return n, err
}

// KeyUsage counts blobs per key id (for `credgate verify` and rotation).
func (s *Accounts) KeyUsage(ctx context.Context, db DB) (map[uint32]int64, error) {
	rows, err := db.Query(ctx, `SELECT coalesce(credentials_key_id, 0), count(*) FROM social_accounts
		WHERE credentials_encrypted IS NOT NULL GROUP BY 1`)
	if err != nil {
		return nil, err
	}
	out := map[uint32]int64{}
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[uint32(id)] = n
	}
	return out, rows.Err()
}
