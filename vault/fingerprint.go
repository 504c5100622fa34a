package vault

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// VerifyFingerprints records the fingerprint of every key in the ring the
// first time it is seen, and refuses a key whose id is already recorded
// with another fingerprint: a wrong ENCRYPTION_MASTER_KEY then stops the
// process at start instead of failing at the first decrypt. The
// fingerprint is an HKDF output; it reveals nothing about the key.
func (k *Keyring) VerifyFingerprints(ctx context.Context, db DB) error {
	for _, id := range k.IDs() {
		e := k.keys[id]
		if _, err := db.Exec(ctx, `INSERT INTO encryption_keys (id, fingerprint) VALUES ($1, $2)
			ON CONFLICT (id) DO NOTHING`, int64(id), e.fingerprint); err != nil {
			return fmt.Errorf("recording key fingerprint: %w", err)
		}
		var recorded []byte
		var since time.Time
		if err := db.QueryRow(ctx, `SELECT fingerprint, created_at FROM encryption_keys WHERE id = $1`, int64(id)).
			Scan(&recorded, &since); err != nil {
			return fmt.Errorf("reading key fingerprint: %w", err)
		}
		if !hmac.Equal(recorded, e.fingerprint) {
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

// Identity names this keyring's exact set of keys (ids and fingerprints),
// so that a process can remember that a database already accepted it.
func (k *Keyring) Identity() string {
	h := sha256.New()
	for _, id := range k.IDs() {
		fmt.Fprintf(h, "%d:%x;", id, k.keys[id].fingerprint)
	}
	return hex.EncodeToString(h.Sum(nil))
}
