package worker

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/vault"
)

// Advisory lock keys of the singleton loops: arbitrary constants, spelled
// in ASCII so that pg_locks shows whose they are.
const (
	lockCleanup  int64 = 0x6367636c65616e // "cgclean"
	lockSchedule int64 = 0x63677363686564 // "cgsched"
	lockRollup   int64 = 0x6367726f6c6c75 // "cgrollu"
)

// exclusively runs fn in a transaction that holds the advisory lock key,
// so that one replica at a time does the work. With wait false it gives
// up at once (ran false) when another holds the lock: a loop simply
// tries again next tick. With wait true it queues behind the holder: a
// command run by hand then reports what was left to do.
func exclusively(ctx context.Context, db vault.DB, key int64, wait bool, fn func(tx pgx.Tx) error) (ran bool, err error) {
	err = vault.InTx(ctx, db, func(tx pgx.Tx) error {
		if wait {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, key); err != nil {
				return fmt.Errorf("waiting for the singleton lock: %w", err)
			}
			ran = true
		} else if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, key).Scan(&ran); err != nil {
			return fmt.Errorf("taking the singleton lock: %w", err)
		}
		if !ran {
			return nil
		}
		return fn(tx)
	})
	return ran && err == nil, err
}
