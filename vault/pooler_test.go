package vault_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/internal/pgurl"
	"github.com/credgate/credgate/vault"
)

// Through PgBouncer in transaction mode, the stores work as they do on a
// direct connection: connects, reads, renewals' compare-and-swap with its
// audit row, the refresh queue, states, settings, the back-end reads, the
// batch jobs. pgx's default (named statements cached per connection)
// fails there, which is what pooler=transaction changes.
func TestTheStoresWorkThroughATransactionPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct := pgtest.Database(t)
	through := pgtest.Bouncer(t, direct)

	// First, what a user found: pgx's defaults through the pooler fail
	// within a few concurrent statements.
	plain, err := pgxpool.New(ctx, strings.Replace(through, "pooler=transaction", "application_name=plain", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var failed error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			var n int
			q := []string{`SELECT count(*) FROM social_accounts WHERE platform = $1`, `SELECT count(*) FROM oauth_states WHERE platform = $1`}[i%2]
			if err := plain.QueryRow(ctx, q, "twitter").Scan(&n); err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed == nil {
		t.Log("pgx's default mode happened to work through the pooler this time (a PgBouncer with prepared statement support?)")
	}

	mode, err := pgurl.Pooler(through)
	if err != nil || mode != pgurl.TransactionPooler {
		t.Fatalf("Pooler(%s) = %s %v", through, mode, err)
	}
	pool, err := vault.OpenPool(ctx, through)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	keys := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	if _, err := keys.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	accounts := vault.NewAccounts(keys)
	accounts.UseSettings(&vault.SettingsCache{DB: pool, TTL: time.Nanosecond})
	if err := vault.SetSetting(ctx, pool, vault.SettingAppRefresh, "on", "test"); err != nil {
		t.Fatal(err)
	}

	// Many at once, so that statements land on other server connections
	// than the ones that saw them first.
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Go(func() {
			user := []string{alice, bob, carol, dave}[i%4]
			platform := []string{"twitter", "linkedin", "facebook", "instagram"}[i/4%4]
			jobAt := time.Now().Add(time.Hour)
			acct, err := accounts.StoreConnect(ctx, pool, connection(user, platform, "access", "refresh"), jobAt,
				func(id string) vault.Event {
					return vault.Event{UserID: user, Platform: platform, Action: vault.ActionConnect, Status: vault.Success,
						Details: map[string]any{"account_id": id, "flow": "new"}}
				})
			if err != nil {
				errs <- err
				return
			}
			if _, _, err := accounts.Get(ctx, pool, user, platform); err != nil {
				errs <- err
				return
			}
			err = vault.InTx(ctx, pool, func(tx pgx.Tx) error {
				locked, err := accounts.LockForRenewal(ctx, tx, acct.ID)
				if err != nil {
					return err
				}
				b := &pgx.Batch{}
				var out vault.Account
				if err := accounts.QueueCompareAndSwapAudited(b, locked.Account, locked.Account.Version,
					vault.Refreshed{Credentials: locked.Credentials}, vault.Event{UserID: user, Platform: platform,
						Action: vault.ActionRefresh, Status: vault.Success, Details: map[string]any{"trigger": "test"}}, &out); err != nil {
					return err
				}
				return tx.SendBatch(ctx, b).Close()
			})
			if err != nil && !errors.Is(err, vault.ErrVersionConflict) {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("through the pooler: %v", err)
	}
	if t.Failed() {
		return
	}
	var reads vault.BackendReads
	reads.Count("twitter", vault.ViaTokenAPI)
	if err := reads.Flush(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if got, err := vault.BackendReadsIn(ctx, pool, time.Hour); err != nil || got["twitter"].TokenAPI != 1 {
		t.Fatalf("back-end reads through the pooler: %v %v", got, err)
	}
	if _, err := accounts.Backfill(ctx, pool, vault.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := accounts.WriteBack(ctx, pool, vault.WriteBackFilter{Platform: "twitter"}, vault.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var audited int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE action IN ('connect', 'refresh')`).Scan(&audited); err != nil || audited < 32 {
		t.Fatalf("%d audit rows (%v), want the connects and renewals", audited, err)
	}
}

// InTx begins its transactions with the pool's limits behind a
// transaction pooler (pgurl.NewPool), so a renewal's row lock is bounded
// there as it is on a direct connection's session.
func TestInTxCarriesTheLimitsThroughATransactionPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	through := pgtest.Bouncer(t, pgtest.Database(t))
	cfg, err := pgurl.Parse(through)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgurl.NewPool(ctx, cfg, pgurl.LimitSessions(cfg, pgurl.TransactionPooler))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var inTx, outside string
	err = vault.InTx(ctx, pool, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT current_setting('lock_timeout')`).Scan(&inTx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT current_setting('lock_timeout')`).Scan(&outside); err != nil {
		t.Fatal(err)
	}
	if inTx != "15s" || outside == "15s" {
		t.Errorf("lock_timeout in InTx's transaction %q, outside %q: want 15s inside only (SET LOCAL)", inTx, outside)
	}
}
