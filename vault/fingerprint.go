package vault

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrMissingKeys is returned by VerifyFingerprints when credentials are
// sealed with key ids the keyring does not hold.
var ErrMissingKeys = errors.New("credentials are sealed with keys this keyring does not hold")

// VerifyOptions tune VerifyFingerprints.
type VerifyOptions struct {
	// AllowMissingKeys accepts credentials sealed with key ids the keyring
	// does not hold: those accounts are then undecryptable (reported as
	// such), instead of the start being refused.
	AllowMissingKeys bool
}

// VerifyFingerprints checks the keyring against the database before
// anything is served:
//   - a key whose id is already recorded with another fingerprint is
//     refused: a wrong ENCRYPTION_MASTER_KEY (or previous key) stops the
//     process at start instead of failing at the first decrypt;
//   - key ids that seal credentials but are not in the keyring are refused
//     (ErrMissingKeys, naming them), unless opts.AllowMissingKeys;
//   - only when every check passed are the fingerprints of new ids
//     recorded, all in one transaction, so a refused start writes nothing
//     (a later, correct key under that id is not locked out).
//
// The fingerprint is an HKDF output; it reveals nothing about the key.
// It returns the key ids in use that the keyring lacks (non-empty only
// with AllowMissingKeys).
func (k *Keyring) VerifyFingerprints(ctx context.Context, db DB, opts VerifyOptions) (missing []uint32, err error) {
	err = InTx(ctx, db, func(tx pgx.Tx) error {
		if err := k.compareFingerprints(ctx, tx); err != nil {
			return err
		}
		var err error
		if missing, err = k.MissingKeyIDs(ctx, tx); err != nil {
			return err
		}
		if len(missing) > 0 && !opts.AllowMissingKeys {
			return fmt.Errorf("%w: key ids %s seal credentials; add them to %s as id:base64 (or set allow_missing_keys to start anyway, leaving those accounts undecryptable)",
				ErrMissingKeys, joinIDs(missing), EnvPreviousKeys)
		}
		for _, id := range k.IDs() {
			if _, err := tx.Exec(ctx, `INSERT INTO encryption_keys (id, fingerprint) VALUES ($1, $2)
				ON CONFLICT (id) DO NOTHING`, int64(id), k.keys[id].fingerprint); err != nil {
				return fmt.Errorf("recording key fingerprint: %w", err)
			}
		}
		// Another process may have recorded one of these ids since the
		// comparison (the INSERT above waited for it): compare again.
		return k.compareFingerprints(ctx, tx)
	})
	return missing, err
}

// compareFingerprints refuses a key whose id is recorded with another
// fingerprint.
func (k *Keyring) compareFingerprints(ctx context.Context, tx pgx.Tx) error {
	for _, id := range k.IDs() {
		var recorded []byte
		var since time.Time
		err := tx.QueryRow(ctx, `SELECT fingerprint, created_at FROM encryption_keys WHERE id = $1`, int64(id)).Scan(&recorded, &since)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading key fingerprint: %w", err)
		}
		if !hmac.Equal(recorded, k.keys[id].fingerprint) {
			which := EnvMasterKey
			if id != k.primary {
				which = EnvPreviousKeys
			}
			return fmt.Errorf("%w: key id %d in %s is not the key first used under that id on %s; "+
				"restore the right key, or give a new key a new id (ENCRYPTION_MASTER_KEY_ID)",
				ErrKeyMismatch, id, which, since.UTC().Format(time.DateOnly))
		}
	}
	return nil
}

// MissingKeyIDs lists the key ids that seal credentials but are not in the
// keyring. It walks social_accounts_credentials_key_id_idx one distinct id
// at a time (a loose index scan), so it costs a few index probes however
// many rows there are.
func (k *Keyring) MissingKeyIDs(ctx context.Context, db DB) ([]uint32, error) {
	rows, err := db.Query(ctx, `WITH RECURSIVE ids AS (
			(SELECT credentials_key_id AS id FROM social_accounts
			 WHERE credentials_key_id IS NOT NULL AND credentials_encrypted IS NOT NULL ORDER BY credentials_key_id LIMIT 1)
			UNION ALL
			SELECT (SELECT credentials_key_id FROM social_accounts
			        WHERE credentials_key_id > ids.id AND credentials_encrypted IS NOT NULL ORDER BY credentials_key_id LIMIT 1)
			FROM ids WHERE ids.id IS NOT NULL)
		SELECT id FROM ids WHERE id IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("listing key ids in use: %w", err)
	}
	defer rows.Close()
	var missing []uint32
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("listing key ids in use: %w", err)
		}
		if !k.Has(uint32(id)) {
			missing = append(missing, uint32(id))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing key ids in use: %w", err)
	}
	return missing, nil
}

// Has reports whether the keyring holds key id.
func (k *Keyring) Has(id uint32) bool {
	_, ok := k.keys[id]
	return ok
}

func joinIDs(ids []uint32) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(parts, ", ")
}

// Identity names this keyring's exact set of keys (ids and fingerprints),
// so that a process can remember that a database already accepted it.
func (k *Keyring) Identity() string {
	h := sha256.New()
	for _, id := range k.IDs() {
		fmt.Fprintf(h, "%d:%x;", id, k.keys[id].fingerprint)
	}
	return hex.EncodeToString(h.Sum(nil))
}
