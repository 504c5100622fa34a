package vault_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

const (
	alice = "11111111-1111-1111-1111-111111111111"
	bob   = "22222222-2222-2222-2222-222222222222"
)

func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return pgtest.Pool(t, pgtest.Database(t))
}

func connection(user, platform, access, refresh string) vault.Connection {
	return vault.Connection{
		UserID: user, Platform: platform, PlatformUserID: "pid-" + platform, Username: "name-" + platform,
		Credentials: vault.Credentials{AccessToken: secret.New(access), RefreshToken: secret.New(refresh),
			TokenType: "bearer", Expiry: time.Now().Add(2 * time.Hour).Truncate(time.Microsecond)},
		Scopes: []string{"tweet.read", "offline.access"},
	}
}

func TestAccountsLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	keys := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	accounts := vault.NewAccounts(keys)

	// A legacy row the app wrote, with plaintext tokens.
	if _, err := pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, access_token, username)
		VALUES ($1, 'facebook', 'legacy-plain', 'alice-fb')`, alice); err != nil {
		t.Fatal(err)
	}

	acct, err := accounts.Upsert(ctx, pool, connection(alice, "twitter", "access-1", "refresh-1"))
	if err != nil {
		t.Fatal(err)
	}
	if acct.Status != vault.StatusConnected || acct.ConnectedVia != vault.ViaCredgate || acct.Version != 1 ||
		acct.KeyID == nil || *acct.KeyID != 1 || !acct.Encrypted || acct.Username != "name-twitter" {
		t.Errorf("upserted account: %+v", acct)
	}

	got, creds, err := accounts.Get(ctx, pool, alice, "twitter")
	if err != nil {
		t.Fatal(err)
	}
	if creds.AccessToken.Reveal() != "access-1" || creds.RefreshToken.Reveal() != "refresh-1" || got.ID != acct.ID {
		t.Errorf("get returned %+v / access %q", got, creds.AccessToken.Reveal())
	}

	// Reconnect: same row, version bumped, newest token wins.
	again, err := accounts.Upsert(ctx, pool, connection(alice, "twitter", "access-2", "refresh-2"))
	if err != nil || again.ID != acct.ID || again.Version != 2 {
		t.Fatalf("reconnect: %+v %v", again, err)
	}

	list, err := accounts.List(ctx, pool, alice)
	if err != nil || len(list) != 2 || list[0].Platform != "facebook" || list[0].ConnectedVia != vault.ViaLegacy ||
		list[0].Encrypted || list[1].Platform != "twitter" {
		t.Fatalf("list: %+v %v", list, err)
	}
	js, _ := json.Marshal(list)
	for _, tok := range []string{"access-2", "refresh-2", "legacy-plain"} {
		if strings.Contains(string(js), tok) {
			t.Errorf("listing leaks %q: %s", tok, js)
		}
	}

	// CAS: a stale version loses, the current one wins.
	_, err = accounts.CompareAndSwap(ctx, pool, again, 1, vault.Refreshed{Credentials: vault.Credentials{AccessToken: secret.New("stale")}})
	if !errors.Is(err, vault.ErrVersionConflict) {
		t.Errorf("stale CAS: %v", err)
	}
	swapped, err := accounts.CompareAndSwap(ctx, pool, again, 2, vault.Refreshed{Credentials: vault.Credentials{
		AccessToken: secret.New("access-3"), RefreshToken: secret.New("refresh-3")}})
	if err != nil || swapped.Version != 3 || swapped.LastRefreshedAt == nil {
		t.Fatalf("CAS: %+v %v", swapped, err)
	}
	if _, c, _ := accounts.Get(ctx, pool, alice, "twitter"); c.RefreshToken.Reveal() != "refresh-3" {
		t.Errorf("after CAS refresh token = %q", c.RefreshToken.Reveal())
	}

	if err := accounts.MarkNeedsReauth(ctx, pool, acct, "needs_reauth"); err != nil {
		t.Fatal(err)
	}
	if a, _, _ := accounts.Get(ctx, pool, alice, "twitter"); a.Status != vault.StatusNeedsReauth {
		t.Errorf("status = %s", a.Status)
	}

	gone, err := accounts.Disconnect(ctx, pool, alice, "twitter")
	if err != nil || gone.Status != vault.StatusDisconnected || gone.Encrypted {
		t.Fatalf("disconnect: %+v %v", gone, err)
	}
	if _, _, err := accounts.Get(ctx, pool, alice, "twitter"); !errors.Is(err, vault.ErrNotConnected) {
		t.Errorf("get after disconnect: %v", err)
	}
	if _, err := accounts.Disconnect(ctx, pool, alice, "twitter"); !errors.Is(err, vault.ErrNotConnected) {
		t.Errorf("second disconnect: %v", err)
	}
	// Disconnecting a legacy row wipes its plaintext too.
	if _, err := accounts.Disconnect(ctx, pool, alice, "facebook"); err != nil {
		t.Fatal(err)
	}
	var plain *string
	pool.QueryRow(ctx, `SELECT access_token FROM social_accounts WHERE user_id = $1 AND platform = 'facebook'`, alice).Scan(&plain)
	if plain != nil {
		t.Errorf("legacy plaintext survived disconnect: %q", *plain)
	}
}

func TestCredentialRecordDumpShowsNoToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	conn := connection(alice, "linkedin", "tok-AAAA-very-secret", "tok-RRRR-very-secret")
	if _, err := accounts.Upsert(ctx, pool, conn); err != nil {
		t.Fatal(err)
	}
	acct, creds, err := accounts.Get(ctx, pool, alice, "linkedin")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(struct {
		vault.Account
		vault.Credentials
		C vault.Connection
	}{acct, creds, conn})
	for _, out := range []string{fmt.Sprintf("%v", creds), fmt.Sprintf("%+v", creds), fmt.Sprintf("%#v", creds),
		fmt.Sprintf("%+v", conn), fmt.Sprintf("%v %+v", acct, acct), string(js)} {
		if strings.Contains(out, "very-secret") {
			t.Errorf("dump leaks a token: %s", out)
		}
	}
	// And the database holds no plaintext either.
	var n int
	pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts WHERE position('very-secret' in
		coalesce(access_token,'') || coalesce(refresh_token,'') || encode(coalesce(credentials_encrypted,''), 'escape')) > 0`).Scan(&n)
	if n != 0 {
		t.Errorf("%d rows hold the token in the clear", n)
	}
}

func TestCredentialWriteAndAuditCommitTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))

	// The audit insert fails (an invalid status), so the upsert must roll back too.
	err := vault.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := accounts.Upsert(ctx, tx, connection(bob, "twitter", "a", "r")); err != nil {
			return err
		}
		return vault.AppendAudit(ctx, tx, vault.Event{Action: vault.ActionConnect, Status: "bogus"})
	})
	if err == nil {
		t.Fatal("expected the audit insert to fail")
	}
	var rows, audits int
	pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM social_accounts), (SELECT count(*) FROM credential_audit_log)`).Scan(&rows, &audits)
	if rows != 0 || audits != 0 {
		t.Errorf("half-written: %d accounts, %d audit rows", rows, audits)
	}

	err = vault.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := accounts.Upsert(ctx, tx, connection(bob, "twitter", "a", "r")); err != nil {
			return err
		}
		return vault.AppendAudit(ctx, tx, vault.Event{UserID: bob, Platform: "twitter", Action: vault.ActionConnect,
			Flow: "new", Duration: 1500 * time.Millisecond, Details: map[string]any{"scopes": 2}})
	})
	if err != nil {
		t.Fatal(err)
	}
	var action, status, flow string
	var ms int
	pool.QueryRow(ctx, `SELECT action, status, flow, duration_ms FROM credential_audit_log`).Scan(&action, &status, &flow, &ms)
	if action != "connect" || status != "success" || flow != "new" || ms != 1500 {
		t.Errorf("audit row: %s %s %s %d", action, status, flow, ms)
	}
}

// The migration guide's monitoring queries, exactly as written there.
func TestSeedMonitoringQueriesRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	for i, e := range []vault.Event{
		{UserID: alice, Platform: "twitter", Action: vault.ActionConnect, Flow: "new"},
		{UserID: alice, Platform: "twitter", Action: vault.ActionConnect, Flow: "new"},
		{UserID: bob, Platform: "facebook", Action: vault.ActionConnect, Status: vault.Failed, ErrorCode: "invalid_grant", Flow: "new"},
		{Action: vault.ActionStateCleanup, Details: map[string]any{"deleted": 3}},
	} {
		if err := vault.AppendAudit(ctx, pool, e); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}

	rows, err := pool.Query(ctx, `SELECT action, status, COUNT(*)
FROM credential_audit_log
WHERE created_at > NOW() - INTERVAL '24 hours'
GROUP BY action, status`)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	for rows.Next() {
		var a, s string
		var n int64
		rows.Scan(&a, &s, &n)
		counts[a+"/"+s] = n
	}
	if counts["connect/success"] != 2 || counts["connect/failed"] != 1 || counts["state_cleanup/success"] != 1 {
		t.Errorf("24h summary: %v", counts)
	}

	var failed int
	rows, err = pool.Query(ctx, `SELECT * FROM credential_audit_log
WHERE status = 'failed'
ORDER BY created_at DESC`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		failed++
	}
	if failed != 1 {
		t.Errorf("failed events: %d", failed)
	}

	var days int
	rows, err = pool.Query(ctx, `SELECT DATE(created_at), status, COUNT(*)
FROM credential_audit_log
GROUP BY DATE(created_at), status`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		days++
	}
	if days != 2 { // today × {success, failed}
		t.Errorf("weekly query returned %d groups, want 2", days)
	}

	var encrypted int
	if err := pool.QueryRow(ctx, `SELECT COUNT(*) FROM social_accounts
WHERE credentials_encrypted IS NOT NULL`).Scan(&encrypted); err != nil {
		t.Fatal(err)
	}
}

func TestStateIsSingleUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	states := vault.NewStates(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	st := secret.New("state-" + strings.Repeat("x", 40))
	err := states.Create(ctx, pool, vault.NewState{State: st, UserID: alice, Platform: "twitter",
		Verifier: secret.New("verifier-123"), BrowserBinding: secret.New("cookie-abc"),
		ReturnTo: "/settings", RedirectURI: "http://localhost:8080/api/twitter/callback"})
	if err != nil {
		t.Fatal(err)
	}
	var stored []byte
	var verifierBlob []byte
	pool.QueryRow(ctx, `SELECT state_hash, code_verifier_encrypted FROM oauth_states`).Scan(&stored, &verifierBlob)
	if strings.Contains(string(stored), "state-") || strings.Contains(string(verifierBlob), "verifier-123") {
		t.Error("raw state or verifier stored")
	}

	const racers = 50
	var wins atomic.Int32
	var winner vault.ConsumedState
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range racers {
		wg.Go(func() {
			c, err := states.Consume(ctx, pool, st)
			if err == nil {
				wins.Add(1)
				mu.Lock()
				winner = c
				mu.Unlock()
			} else if !errors.Is(err, vault.ErrStateNotFound) {
				t.Errorf("consume: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d goroutines consumed the state, want exactly 1", wins.Load())
	}
	if winner.UserID != alice || winner.Flow != "new" || winner.Verifier.Reveal() != "verifier-123" ||
		winner.ReturnTo != "/settings" || !winner.MatchesBrowser(secret.New("cookie-abc")) || winner.MatchesBrowser(secret.New("cookie-abd")) {
		t.Errorf("consumed state: %+v", winner)
	}
	if _, err := states.Consume(ctx, pool, st); !errors.Is(err, vault.ErrStateNotFound) {
		t.Errorf("second consume: %v", err)
	}
}

// The consume commits without waiting for the disk, for its own
// transaction only: the connection it ran on (a pooled one, shared with
// every later statement) still commits durably, and the consume reads the
// account row's id for the store.
func TestConsumeLeavesTheConnectionDurable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Database(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	keys := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	states, accounts := vault.NewStates(keys), vault.NewAccounts(keys)
	acct, err := accounts.Upsert(ctx, conn, connection(alice, "twitter", "at", "rt"))
	if err != nil {
		t.Fatal(err)
	}
	for i, user := range []string{alice, bob} {
		st := secret.New(fmt.Sprintf("state-%d-%s", i, strings.Repeat("x", 40)))
		if err := states.Create(ctx, conn, vault.NewState{State: st, UserID: user, Platform: "twitter",
			RedirectURI: "http://localhost:8080/api/twitter/callback"}); err != nil {
			t.Fatal(err)
		}
		c, err := states.Consume(ctx, conn, st)
		if err != nil {
			t.Fatal(err)
		}
		var setting string
		if err := conn.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting); err != nil || setting != "on" {
			t.Fatalf("after a consume the connection's synchronous_commit is %q (%v), want on", setting, err)
		}
		if want := map[string]string{alice: acct.ID, bob: ""}[user]; c.AccountID != want {
			t.Errorf("consume for %s read account id %q, want %q", user, c.AccountID, want)
		}
	}
}

func TestExpiredStateIsRefusedAndCleanedUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	states := vault.NewStates(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	mk := func(s string) secret.Value {
		v := secret.New(s)
		if err := states.Create(ctx, pool, vault.NewState{State: v, UserID: alice, Platform: "facebook", RedirectURI: "http://x/cb"}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	expired, live, old := mk("expired"), mk("live"), mk("old")
	pool.Exec(ctx, `UPDATE oauth_states SET expires_at = now() - interval '1 second' WHERE state_hash IN ($1, $2)`,
		vault.HashState(expired), vault.HashState(old))

	if _, err := states.Consume(ctx, pool, expired); !errors.Is(err, vault.ErrStateExpired) {
		t.Errorf("expired consume: %v", err)
	}
	n, err := states.CleanupExpired(ctx, pool)
	if err != nil || n != 1 {
		t.Errorf("cleanup deleted %d (%v), want 1 (the other expired one)", n, err)
	}
	if _, err := states.Consume(ctx, pool, live); err != nil {
		t.Errorf("live state: %v", err)
	}
}

func TestRefreshQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))

	const n = 60
	var ids []string
	for i := range n {
		a, err := accounts.Upsert(ctx, pool, connection(fmt.Sprintf("00000000-0000-0000-0000-%012d", i), "twitter", "a", "r"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
		first, err := vault.ScheduleRenewal(ctx, pool, a.ID, a.Version, time.Now().Add(-time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		second, err := vault.ScheduleRenewal(ctx, pool, a.ID, a.Version, time.Now().Add(-time.Minute))
		if err != nil || second != first {
			t.Fatalf("schedule twice: %d then %d (%v), want the same open job", first, second, err)
		}
	}

	// Two pools, four workers each, claim concurrently.
	pools := []*pgxpool.Pool{pool, pgtest.Pool(t, url)}
	var mu sync.Mutex
	claimed := map[int64]string{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			worker := fmt.Sprintf("worker-%d", w)
			for {
				jobs, err := (vault.RefreshQueue{Worker: worker}).Claim(ctx, pools[w%2], 3, time.Minute, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				if len(jobs) == 0 {
					return
				}
				mu.Lock()
				for _, j := range jobs {
					if prev, dup := claimed[j.ID]; dup {
						t.Errorf("job %d claimed by %s and %s", j.ID, prev, worker)
					}
					claimed[j.ID] = worker
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != n {
		t.Fatalf("claimed %d jobs, want %d", len(claimed), n)
	}

	// An expired lease is claimable again, and the old holder cannot finish it.
	var job vault.Job
	pool.QueryRow(ctx, `UPDATE token_refresh_queue SET locked_until = now() - interval '1 second'
		WHERE id = (SELECT min(id) FROM token_refresh_queue) RETURNING id, social_account_id::text, attempts`).Scan(&job.ID, &job.AccountID, &job.Attempts)
	again, err := (vault.RefreshQueue{Worker: "rescuer"}).Claim(ctx, pool, 10, time.Minute, time.Now())
	if err != nil || len(again) != 1 || again[0].ID != job.ID || again[0].Attempts != 2 {
		t.Fatalf("reclaim: %+v %v", again, err)
	}
	if err := (vault.RefreshQueue{Worker: claimed[job.ID]}).Complete(ctx, pool, job); !errors.Is(err, vault.ErrLeaseLost) {
		t.Errorf("old holder completed a lost job: %v", err)
	}
	// Even under the same worker name, a claim from an earlier attempt
	// cannot finish the job.
	stale := again[0]
	stale.Attempts = 1
	if err := (vault.RefreshQueue{Worker: "rescuer"}).Complete(ctx, pool, stale); !errors.Is(err, vault.ErrLeaseLost) {
		t.Errorf("a stale attempt completed the job: %v", err)
	}
	if err := (vault.RefreshQueue{Worker: "rescuer"}).Complete(ctx, pool, again[0]); err != nil {
		t.Fatal(err)
	}

	// Fail → pending with backoff; after MaxAttempts → dead.
	backoff := vault.Backoff{Base: time.Hour, Max: 4 * time.Hour, MaxAttempts: 2}
	var failing vault.Job
	for id, w := range claimed {
		if id != job.ID {
			failing = vault.Job{ID: id}
			pool.QueryRow(ctx, `SELECT social_account_id::text, attempts FROM token_refresh_queue WHERE id = $1`, id).Scan(&failing.AccountID, &failing.Attempts)
			dead, err := (vault.RefreshQueue{Worker: w}).Fail(ctx, pool, failing, "provider_unavailable", backoff, time.Now())
			if err != nil || dead {
				t.Fatalf("first failure: dead=%v %v", dead, err)
			}
			break
		}
	}
	var status, lastErr string
	var delay time.Duration
	pool.QueryRow(ctx, `SELECT status, last_error, run_at - now() FROM token_refresh_queue WHERE id = $1`, failing.ID).Scan(&status, &lastErr, &delay)
	if status != "pending" || lastErr != "provider_unavailable" || delay < 29*time.Minute || delay > 61*time.Minute {
		t.Errorf("after failure: %s %s retry in %v, want pending in 30–60 min", status, lastErr, delay)
	}
	pool.Exec(ctx, `UPDATE token_refresh_queue SET run_at = now() WHERE id = $1`, failing.ID)
	retry, _ := (vault.RefreshQueue{Worker: "w2"}).Claim(ctx, pool, 100, time.Minute, time.Now())
	var mine vault.Job
	for _, j := range retry {
		if j.ID == failing.ID {
			mine = j
		}
	}
	if mine.Attempts != 2 {
		t.Fatalf("retry not claimed: %+v", retry)
	}
	dead, err := (vault.RefreshQueue{Worker: "w2"}).Fail(ctx, pool, mine, "provider_unavailable", backoff, time.Now())
	if err != nil || !dead {
		t.Errorf("second failure with MaxAttempts 2: dead=%v %v", dead, err)
	}

	if err := vault.CancelRenewals(ctx, pool, ids[5]); err != nil {
		t.Fatal(err)
	}
	var open int
	pool.QueryRow(ctx, `SELECT count(*) FROM token_refresh_queue WHERE social_account_id = $1 AND status IN ('pending','running')`, ids[5]).Scan(&open)
	if open != 0 {
		t.Errorf("cancel left %d open jobs", open)
	}
}

func TestBackoffIsCappedWithJitter(t *testing.T) {
	t.Parallel()
	b := vault.Backoff{Base: time.Second, Max: time.Minute}
	for attempt, want := range map[int]time.Duration{1: time.Second, 3: 4 * time.Second, 10: time.Minute, 100: time.Minute} {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("attempt %d: no jitter", attempt)
		}
	}
}

func TestKeyFingerprintRefusesAnotherKeyUnderTheSameID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	right := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	if _, err := right.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := right.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Fatalf("same key again: %v", err)
	}
	wrong := mustKeyring(t, vault.KeyConfig{MasterKey: key(2)})
	_, err := wrong.VerifyFingerprints(ctx, pool, vault.VerifyOptions{})
	if !errors.Is(err, vault.ErrKeyMismatch) || !strings.Contains(err.Error(), "key id 1 in ENCRYPTION_MASTER_KEY") {
		t.Errorf("wrong key: %v", err)
	}
	rotated := mustKeyring(t, vault.KeyConfig{MasterKey: key(2), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	if _, err := rotated.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Errorf("new key under a new id: %v", err)
	}
}

// A start refused because a previous key is wrong writes nothing: the
// new primary id is not recorded, so a later, correct key under that id
// is accepted.
func TestARefusedKeyCheckRecordsNoFingerprint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	if _, err := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}).VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	// Rotation attempt with a mistyped previous key: refused.
	bad := mustKeyring(t, vault.KeyConfig{MasterKey: key(3), MasterKeyID: 2, PreviousKeys: "1:" + key(9)})
	if _, err := bad.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); !errors.Is(err, vault.ErrKeyMismatch) {
		t.Fatalf("a wrong previous key: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM encryption_keys WHERE id = 2`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused start recorded id 2 (%d rows, %v)", n, err)
	}
	// The operator fixes the previous key, and picks another new key.
	good := mustKeyring(t, vault.KeyConfig{MasterKey: key(4), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	if _, err := good.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Fatalf("the corrected keyring is refused: %v", err)
	}
}

// Credentials sealed with a key id the keyring lacks refuse the start,
// naming the id and the fix, unless the loss is accepted explicitly.
func TestMissingKeyIDsRefuseTheStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	old := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	if _, err := vault.NewAccounts(old).Upsert(ctx, pool, connection(alice, "twitter", "a", "r")); err != nil {
		t.Fatal(err)
	}
	newOnly := mustKeyring(t, vault.KeyConfig{MasterKey: key(2), MasterKeyID: 2})
	_, err := newOnly.VerifyFingerprints(ctx, pool, vault.VerifyOptions{})
	if !errors.Is(err, vault.ErrMissingKeys) || !strings.Contains(err.Error(), "key ids 1 seal credentials") || !strings.Contains(err.Error(), vault.EnvPreviousKeys) {
		t.Fatalf("missing key 1: %v", err)
	}
	missing, err := newOnly.VerifyFingerprints(ctx, pool, vault.VerifyOptions{AllowMissingKeys: true})
	if err != nil || len(missing) != 1 || missing[0] != 1 {
		t.Fatalf("allowed: missing %v, %v", missing, err)
	}
	withBoth := mustKeyring(t, vault.KeyConfig{MasterKey: key(2), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	if missing, err := withBoth.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil || len(missing) != 0 {
		t.Fatalf("with the previous key: %v %v", missing, err)
	}
}

// A state and its audit row are written together or not at all, in one
// statement.
func TestCreateAuditedIsAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	states := vault.NewStates(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	n := vault.NewState{State: secret.New("cg1.state-one"), UserID: alice, Platform: "twitter", RedirectURI: "http://x/cb",
		Verifier: secret.New("verifier")}
	ev := vault.Event{UserID: alice, Platform: "twitter", Action: vault.ActionOAuthStart, Status: vault.Success, Flow: "new"}
	if err := states.CreateAudited(ctx, pool, n, ev); err != nil {
		t.Fatal(err)
	}
	count := func(table string) int {
		var c int
		pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&c)
		return c
	}
	if count("oauth_states") != 1 || count("credential_audit_log") != 1 {
		t.Fatalf("after one: %d states, %d audit rows", count("oauth_states"), count("credential_audit_log"))
	}
	// The audit row fails (a flow the CHECK refuses): no state either.
	bad := ev
	bad.Flow = "bogus"
	n.State = secret.New("cg1.state-two")
	if err := states.CreateAudited(ctx, pool, n, bad); err == nil {
		t.Fatal("a refused audit row passed")
	}
	// The state fails (the same state again): no audit row either.
	n.State = secret.New("cg1.state-one")
	if err := states.CreateAudited(ctx, pool, n, ev); err == nil {
		t.Fatal("a duplicate state passed")
	}
	if count("oauth_states") != 1 || count("credential_audit_log") != 1 {
		t.Fatalf("after the failures: %d states, %d audit rows; want 1 and 1", count("oauth_states"), count("credential_audit_log"))
	}
	// The state still works.
	if _, err := states.Consume(ctx, pool, secret.New("cg1.state-one")); err != nil {
		t.Fatal(err)
	}
}

// An app's table may give a new row an id of its own (a trigger, say):
// the one statement then writes nothing, since its blob was sealed for
// the id it chose, and the store falls back to reading the row's id
// first. The credential opens, and its job and audit row name that row.
func TestStoreConnectWhenTheAppRewritesTheRowID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	pgtest.Exec(t, url, `CREATE FUNCTION app_ids() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN NEW.id := gen_random_uuid(); RETURN NEW; END $$;
		CREATE TRIGGER app_ids BEFORE INSERT ON social_accounts FOR EACH ROW EXECUTE FUNCTION app_ids()`)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	jobAt := time.Now().Add(time.Hour)
	acct, err := accounts.StoreConnect(ctx, pool, connection(alice, "twitter", "at-1", "rt-1"), jobAt, func(id string) vault.Event {
		return vault.Event{UserID: alice, Platform: "twitter", Action: vault.ActionConnect, Details: map[string]any{"account_id": id}}
	})
	if err != nil {
		t.Fatal(err)
	}
	got, creds, err := accounts.Get(ctx, pool, alice, "twitter")
	if err != nil || creds.AccessToken.Reveal() != "at-1" || got.ID != acct.ID {
		t.Fatalf("get: %v %q (row %s, stored %s)", err, creds.AccessToken.Reveal(), got.ID, acct.ID)
	}
	var rows, jobs, audited int
	pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM social_accounts),
		(SELECT count(*) FROM token_refresh_queue q JOIN social_accounts a ON a.id = q.social_account_id AND q.credentials_version = a.credentials_version),
		(SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND details->>'account_id' = $1)`, acct.ID).Scan(&rows, &jobs, &audited)
	if rows != 1 || jobs != 1 || audited != 1 {
		t.Fatalf("%d rows, %d jobs for the row's version, %d audit rows naming it; want 1 each", rows, jobs, audited)
	}
}
