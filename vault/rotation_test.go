package vault_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// seedAccounts connects n accounts under keys and returns user id → access token.
func seedAccounts(t testing.TB, pool *pgxpool.Pool, keys *vault.Keyring, n int) map[string]string {
	t.Helper()
	ctx := context.Background()
	accounts := vault.NewAccounts(keys)
	want := map[string]string{}
	for i := range n {
		user := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		access := fmt.Sprintf("access-%d", i)
		if _, err := accounts.Upsert(ctx, pool, connection(user, "twitter", access, "refresh")); err != nil {
			t.Fatal(err)
		}
		want[user] = access
	}
	return want
}

func assertAllOnKey(t *testing.T, pool *pgxpool.Pool, keys *vault.Keyring, want map[string]string, keyID uint32) {
	t.Helper()
	ctx := context.Background()
	accounts := vault.NewAccounts(keys)
	usage, err := accounts.KeyUsage(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(usage) != 1 || usage[keyID] != int64(len(want)) {
		t.Errorf("key usage %v, want all %d rows on key %d", usage, len(want), keyID)
	}
	for user, access := range want {
		_, c, err := accounts.Get(ctx, pool, user, "twitter")
		if err != nil || c.AccessToken.Reveal() != access {
			t.Fatalf("user %s: %q %v, want %q", user, c.AccessToken.Reveal(), err, access)
		}
	}
}

func TestRewrapKilledHalfwayResumes(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	old := mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1})
	want := seedAccounts(t, pool, old, 230)
	rotated := mustKeyring(t, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	accounts := vault.NewAccounts(rotated)

	// Kill the first run after two batches.
	ctx, cancel := context.WithCancel(context.Background())
	p, err := accounts.Rewrap(ctx, pool, vault.BatchOptions{BatchSize: 50, Progress: func(p vault.Progress) {
		if p.Batches == 2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || p.Done != 100 {
		t.Fatalf("killed run: done %d, err %v; want 100 rows then cancellation", p.Done, err)
	}
	usage, _ := accounts.KeyUsage(context.Background(), pool)
	if usage[1] != 130 || usage[2] != 100 {
		t.Fatalf("after kill: %v", usage)
	}

	p, err = accounts.Rewrap(context.Background(), pool, vault.BatchOptions{BatchSize: 50})
	if err != nil || p.Done != 130 || p.Remaining != 0 || p.Failed != 0 {
		t.Fatalf("resumed run: %+v %v", p, err)
	}
	assertAllOnKey(t, pool, rotated, want, 2)

	var batches int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM credential_audit_log WHERE action = 'rewrap'`).Scan(&batches)
	if batches != 2+3 {
		t.Errorf("%d rewrap audit rows, want one per batch (5)", batches)
	}
}

func TestConcurrentRewrappers(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	old := mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1})
	want := seedAccounts(t, pool, old, 400)
	rotated := mustKeyring(t, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})

	var wg sync.WaitGroup
	results := make([]vault.Progress, 2)
	for i := range 2 {
		wg.Go(func() {
			p, err := vault.NewAccounts(rotated).Rewrap(context.Background(), pgtest.Pool(t, url),
				vault.BatchOptions{BatchSize: 25, Worker: fmt.Sprint(i)})
			if err != nil {
				t.Error(err)
			}
			results[i] = p
		})
	}
	wg.Wait()
	if results[0].Done+results[1].Done != 400 {
		t.Errorf("rewrappers did %d + %d rows, want 400 in total", results[0].Done, results[1].Done)
	}
	var maxVersion int
	pool.QueryRow(context.Background(), `SELECT max(credentials_version) FROM social_accounts`).Scan(&maxVersion)
	if maxVersion != 2 {
		t.Errorf("some row was rewrapped more than once (max version %d)", maxVersion)
	}
	assertAllOnKey(t, pool, rotated, want, 2)
}

func TestRewrapReportsUndecryptableRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	old := mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1})
	seedAccounts(t, pool, old, 3)
	// One blob moved onto another row: bound to the wrong row, it must not open.
	pool.Exec(ctx, `UPDATE social_accounts SET credentials_encrypted = (SELECT credentials_encrypted FROM social_accounts ORDER BY id LIMIT 1)
		WHERE id = (SELECT id FROM social_accounts ORDER BY id DESC LIMIT 1)`)
	rotated := mustKeyring(t, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	p, err := vault.NewAccounts(rotated).Rewrap(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 2 || p.Failed != 1 || p.Remaining != 1 {
		t.Fatalf("rewrap: %+v %v", p, err)
	}
	var audited int
	pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE action = 'decrypt_failed' AND status = 'failed'`).Scan(&audited)
	if audited != 1 {
		t.Errorf("decrypt failures audited: %d", audited)
	}
}

func TestBackfillThenPurgeLosesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	keys := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	accounts := vault.NewAccounts(keys)

	const n = 1000
	if _, err := pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token)
		SELECT gen_random_uuid(), 'twitter', 'legacy-access-' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'legacy-refresh-' || i END
		FROM generate_series(1, $1) AS i`, n); err != nil {
		t.Fatal(err)
	}
	type plain struct{ access, refresh *string }
	snapshot := func() map[string]plain {
		rows, _ := pool.Query(ctx, `SELECT user_id::text, access_token, refresh_token FROM social_accounts`)
		out := map[string]plain{}
		for rows.Next() {
			var u string
			var p plain
			rows.Scan(&u, &p.access, &p.refresh)
			out[u] = p
		}
		return out
	}
	before := snapshot()

	plan, err := accounts.PlanBackfill(ctx, pool)
	if err != nil || plan.ToEncrypt != n || plan.ToVerify != 0 {
		t.Fatalf("dry run: %+v %v", plan, err)
	}
	var blobs int
	pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts WHERE credentials_encrypted IS NOT NULL`).Scan(&blobs)
	if blobs != 0 {
		t.Fatal("dry run wrote blobs")
	}

	p, err := accounts.Backfill(ctx, pool, vault.BatchOptions{BatchSize: 128})
	if err != nil || p.Done != n || p.Failed != 0 || p.Batches != 8 {
		t.Fatalf("backfill: %+v %v", p, err)
	}
	if after := snapshot(); len(after) != n || fmt.Sprint(after) == "" {
		t.Fatal("rows lost")
	}
	for u, want := range before {
		if got := snapshot()[u]; *got.access != *want.access {
			t.Fatalf("backfill changed plaintext of %s", u)
		}
		break
	}

	// The legacy app refreshes one token after the backfill: backfill again
	// re-seals that row only; the rest are skipped.
	pool.Exec(ctx, `UPDATE social_accounts SET access_token = 'rotated-by-app' WHERE access_token = 'legacy-access-7'`)
	p, err = accounts.Backfill(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 1 || p.Skipped != n-1 {
		t.Fatalf("second backfill: %+v %v", p, err)
	}
	before = snapshot()

	p, err = accounts.PurgePlaintext(ctx, pool, vault.BatchOptions{BatchSize: 300})
	if err != nil || p.Done != n || p.Failed != 0 {
		t.Fatalf("purge: %+v %v", p, err)
	}
	var left int
	pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL`).Scan(&left)
	if left != 0 {
		t.Errorf("%d rows still hold plaintext", left)
	}
	for user, want := range before {
		_, c, err := accounts.Get(ctx, pool, user, "twitter")
		if err != nil || c.AccessToken.Reveal() != *want.access {
			t.Fatalf("%s: %q %v, want %q", user, c.AccessToken.Reveal(), err, *want.access)
		}
		if want.refresh == nil != c.RefreshToken.IsZero() || (want.refresh != nil && c.RefreshToken.Reveal() != *want.refresh) {
			t.Fatalf("%s: refresh token %q, want %v", user, c.RefreshToken.Reveal(), want.refresh)
		}
	}
	var audits int
	pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE action IN ('backfill', 'purge_plaintext')`).Scan(&audits)
	if audits < 8+2+4 {
		t.Errorf("only %d batch audit rows", audits)
	}
}

func TestPurgeKeepsPlaintextWithoutAMatchingBlob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, access_token) VALUES ($1, 'twitter', 'only-plain'), ($2, 'twitter', 'will-change')`, alice, bob)
	if _, err := accounts.Backfill(ctx, pool, vault.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pool.Exec(ctx, `UPDATE social_accounts SET access_token = 'changed-after-backfill' WHERE user_id = $1`, bob)
	pool.Exec(ctx, `UPDATE social_accounts SET credentials_encrypted = NULL WHERE user_id = $1`, alice)

	// alice's blob is gone (failed); bob's plaintext is newer than the
	// blob (the app's: kept and counted as newer).
	p, err := accounts.PurgePlaintext(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 0 || p.Failed != 1 || p.Newer != 1 {
		t.Fatalf("purge: %+v %v", p, err)
	}
	var kept int
	pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts WHERE access_token IS NOT NULL`).Scan(&kept)
	if kept != 2 {
		t.Errorf("purge cleared plaintext without a matching blob (%d kept)", kept)
	}
}

// A row credgate connected and refreshed keeps its newer blob: backfill
// never reseals it from the (older) plaintext the legacy app left, and
// purge clears that superseded plaintext.
func TestBackfillNeverOverwritesCredgateRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token) VALUES ($1, 'twitter', 'old-access', 'old-refresh')`, alice)
	acct, err := accounts.Upsert(ctx, pool, connection(alice, "twitter", "new-access", "new-refresh"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := accounts.CompareAndSwap(ctx, pool, acct, acct.Version, vault.Refreshed{Credentials: vault.Credentials{
		AccessToken: secret.New("rotated-access"), RefreshToken: secret.New("rotated-refresh")}}); err != nil {
		t.Fatal(err)
	}
	plan, _ := accounts.PlanBackfill(ctx, pool)
	p, err := accounts.Backfill(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 0 || plan.ToEncrypt+plan.ToVerify != 0 {
		t.Fatalf("backfill touched a credgate row: %+v plan %+v %v", p, plan, err)
	}
	if _, c, _ := accounts.Get(ctx, pool, alice, "twitter"); c.RefreshToken.Reveal() != "rotated-refresh" {
		t.Fatalf("refresh token after backfill: %q", c.RefreshToken.Reveal())
	}
	p, err = accounts.PurgePlaintext(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 1 || p.Failed != 0 {
		t.Fatalf("purge: %+v %v", p, err)
	}
	if _, c, _ := accounts.Get(ctx, pool, alice, "twitter"); c.AccessToken.Reveal() != "rotated-access" {
		t.Fatalf("purge changed the blob: %q", c.AccessToken.Reveal())
	}
}

// A run that meets many undecryptable blobs (a wrong previous key) writes
// one decrypt_failed summary row, not one permanent row per blob.
func TestRewrapSummarisesDecryptFailuresInOneRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	seedAccounts(t, pool, mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1}), 30)
	// Key 1 here is not the key the blobs were sealed with (the
	// fingerprint check would refuse it at start; Rewrap alone does not).
	wrong := mustKeyring(t, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(50)})
	p, err := vault.NewAccounts(wrong).Rewrap(ctx, pool, vault.BatchOptions{BatchSize: 7, Worker: "test"})
	if err != nil || p.Failed != 30 || p.Done != 0 {
		t.Fatalf("rewrap: %+v %v", p, err)
	}
	var rows int
	var details map[string]any
	if err := pool.QueryRow(ctx, `SELECT count(*) OVER (), details FROM credential_audit_log WHERE action = 'decrypt_failed'`).Scan(&rows, &details); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || details["accounts"] != float64(30) || len(details["sample_account_ids"].([]any)) != 20 {
		t.Fatalf("%d decrypt_failed rows, details %v; want one summary row", rows, details)
	}
}

// A blob whose header says another key than its credentials_key_id
// column is not taken for done by a rotation.
func TestRewrapReadsTheBlobHeaderNotOnlyTheColumn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	want := seedAccounts(t, pool, mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1}), 3)
	rotated := mustKeyring(t, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	// A hand-edited row: the column claims key 2, the blob is on key 1.
	if _, err := pool.Exec(ctx, `UPDATE social_accounts SET credentials_key_id = 2 WHERE id = (SELECT id FROM social_accounts ORDER BY id LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	p, err := vault.NewAccounts(rotated).Rewrap(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 3 || p.Remaining != 0 {
		t.Fatalf("rewrap: %+v %v", p, err)
	}
	assertAllOnKey(t, pool, rotated, want, 2)
	var onOld int
	pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts WHERE get_byte(credentials_encrypted, 4) = 1`).Scan(&onOld)
	if onOld != 0 {
		t.Fatalf("%d blobs still sealed under key 1", onOld)
	}
}
