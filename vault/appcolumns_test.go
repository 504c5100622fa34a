package vault_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

const (
	carol = "33333333-3333-3333-3333-333333333333"
	dave  = "44444444-4444-4444-4444-444444444444"
)

// appWrites is the unchanged app's own upsert: what a reconnect through
// the legacy flow writes (the app knows nothing of credgate's columns).
func appWrites(t *testing.T, pool *pgxpool.Pool, user, platform, access, refresh string, expires time.Time) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token, token_expires_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, platform) DO UPDATE SET access_token = EXCLUDED.access_token,
			refresh_token = EXCLUDED.refresh_token, token_expires_at = EXCLUDED.token_expires_at, updated_at = now()`,
		user, platform, access, refresh, expires)
	if err != nil {
		t.Fatal(err)
	}
}

func plaintextOf(t *testing.T, pool *pgxpool.Pool, user, platform string) (access, refresh *string, expires *time.Time) {
	t.Helper()
	err := pool.QueryRow(context.Background(), `SELECT access_token, refresh_token, token_expires_at FROM social_accounts
		WHERE user_id = $1 AND platform = $2`, user, platform).Scan(&access, &refresh, &expires)
	if err != nil {
		t.Fatal(err)
	}
	return access, refresh, expires
}

func str(p *string) string {
	if p == nil {
		return "<NULL>"
	}
	return *p
}

// withAppTable gives the test database the app's own expiry column and
// settings for it.
func withAppTable(t *testing.T, pool *pgxpool.Pool, s vault.Settings) vault.SettingsSource {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `ALTER TABLE social_accounts ADD COLUMN token_expires_at timestamptz`); err != nil {
		t.Fatal(err)
	}
	if s.AppExpiryColumn != "" {
		if err := vault.CheckExpiryColumn(ctx, pool, s.AppExpiryColumn); err != nil {
			t.Fatal(err)
		}
	}
	return vault.Fixed(s)
}

func TestTheNewestTokenWins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	accounts.UseSettings(withAppTable(t, pool, vault.Settings{AppExpiryColumn: "token_expires_at"}))

	// Before credgate: the app's own token. Then a connect through
	// credgate supersedes it.
	appExpiry := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	appWrites(t, pool, alice, "twitter", "app-old", "app-old-refresh", appExpiry)
	if _, err := accounts.Upsert(ctx, pool, connection(alice, "twitter", "cg-1", "cg-1-refresh")); err != nil {
		t.Fatal(err)
	}
	a, c, err := accounts.Get(ctx, pool, alice, "twitter")
	if err != nil || c.AccessToken.Reveal() != "cg-1" || a.AppNewer || a.AppOwned {
		t.Fatalf("after a credgate connect: %q appNewer=%v appOwned=%v %v, want credgate's token", c.AccessToken.Reveal(), a.AppNewer, a.AppOwned, err)
	}
	// The superseded plaintext is purged; the app never wrote after.
	p, err := accounts.PurgePlaintext(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 1 || p.Newer != 0 {
		t.Fatalf("purge of a superseded plaintext: %+v %v", p, err)
	}

	// Rollback: the user reconnects through the legacy app, which writes
	// a new token. It is the current one from now on.
	newExpiry := time.Now().Add(90 * time.Minute).UTC().Truncate(time.Second)
	appWrites(t, pool, alice, "twitter", "app-new", "app-new-refresh", newExpiry)
	a, c, err = accounts.Get(ctx, pool, alice, "twitter")
	if err != nil || c.AccessToken.Reveal() != "app-new" || !a.AppNewer || !a.AppOwned {
		t.Fatalf("after the app wrote again: %q appNewer=%v %v, want the app's new token", c.AccessToken.Reveal(), a.AppNewer, err)
	}
	if a.ExpiresAt == nil || !a.ExpiresAt.Equal(newExpiry) || !c.Expiry.Equal(newExpiry) {
		t.Fatalf("expiry %v / %v, want the app's column %v", a.ExpiresAt, c.Expiry, newExpiry)
	}
	// No purge clears it; it reports it.
	p, err = accounts.PurgePlaintext(ctx, pool, vault.BatchOptions{})
	if err != nil || p.Done != 0 || p.Newer != 1 {
		t.Fatalf("purge with the app's newer token: %+v %v, want it kept and counted", p, err)
	}
	if access, _, _ := plaintextOf(t, pool, alice, "twitter"); str(access) != "app-new" {
		t.Fatalf("purge cleared the app's newer token: %s", str(access))
	}
	// Backfill takes it: the row is the app's again, sealed, with the
	// app's expiry; then the purge may clear it.
	if p, err = accounts.Backfill(ctx, pool, vault.BatchOptions{}); err != nil || p.Done != 1 {
		t.Fatalf("backfill: %+v %v", p, err)
	}
	a, c, err = accounts.Get(ctx, pool, alice, "twitter")
	if err != nil || c.AccessToken.Reveal() != "app-new" || a.AppNewer || !a.AppOwned || a.ConnectedVia != vault.ViaLegacy {
		t.Fatalf("after backfill: %q appNewer=%v via=%s %v", c.AccessToken.Reveal(), a.AppNewer, a.ConnectedVia, err)
	}
	if a.ExpiresAt == nil || !a.ExpiresAt.Equal(newExpiry) {
		t.Fatalf("backfill's expires_at %v, want %v", a.ExpiresAt, newExpiry)
	}
	if p, err = accounts.PurgePlaintext(ctx, pool, vault.BatchOptions{}); err != nil || p.Done != 1 || p.Newer != 0 {
		t.Fatalf("purge after backfill: %+v %v", p, err)
	}
}

func TestWriteBackIsTheWayBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	accounts.UseSettings(withAppTable(t, pool, vault.Settings{AppExpiryColumn: "token_expires_at"}))

	// bob connected through credgate only; carol had an app token first;
	// dave reconnected through the app after credgate (newest: the app's).
	for _, u := range []string{bob, carol, dave} {
		if u != bob {
			appWrites(t, pool, u, "linkedin", "app-before-"+u, "", time.Now().Add(time.Hour))
		}
		conn := connection(u, "linkedin", "cg-"+u, "cg-refresh-"+u)
		conn.Credentials.Expiry = time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
		if _, err := accounts.Upsert(ctx, pool, conn); err != nil {
			t.Fatal(err)
		}
	}
	appWrites(t, pool, dave, "linkedin", "app-after-dave", "", time.Now().Add(time.Hour))

	plan, err := accounts.PlanWriteBack(ctx, pool, vault.WriteBackFilter{Platform: "linkedin"})
	if err != nil || plan.ToWrite != 2 || plan.Newer != 1 {
		t.Fatalf("plan %+v %v, want 2 to write and 1 newer", plan, err)
	}
	// Two processes at once: each account written exactly once.
	type result struct {
		p   vault.Progress
		err error
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			p, err := accounts.WriteBack(ctx, pool, vault.WriteBackFilter{Platform: "linkedin"}, vault.BatchOptions{BatchSize: 1})
			results <- result{p, err}
		}()
	}
	var done int64
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		done += r.p.Done
	}
	if done != 2 {
		t.Fatalf("written %d times in all, want 2", done)
	}
	for _, u := range []string{bob, carol} {
		access, refresh, expires := plaintextOf(t, pool, u, "linkedin")
		if str(access) != "cg-"+u || str(refresh) != "cg-refresh-"+u || expires == nil || time.Until(*expires) < 23*time.Hour {
			t.Fatalf("%s: %s/%s expires %v, want credgate's token in the app's columns", u, str(access), str(refresh), expires)
		}
	}
	if access, _, _ := plaintextOf(t, pool, dave, "linkedin"); str(access) != "app-after-dave" {
		t.Fatalf("dave's newer app token was overwritten: %s", str(access))
	}
	// Again: nothing left to write.
	if p, err := accounts.WriteBack(ctx, pool, vault.WriteBackFilter{}, vault.BatchOptions{}); err != nil || p.Done != 0 {
		t.Fatalf("second write-back %+v %v, want nothing written", p, err)
	}
	var audited int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE action = 'writeback' AND user_id IS NOT NULL`).Scan(&audited); err != nil || audited != 2 {
		t.Fatalf("%d writeback audit rows (%v), want 2", audited, err)
	}
}

func TestTransitionModeWritesTheAppsColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	accounts.UseSettings(withAppTable(t, pool, vault.Settings{TransitionMode: true, AppExpiryColumn: "token_expires_at"}))
	appWrites(t, pool, alice, "twitter", "app-old", "app-old-refresh", time.Now().Add(time.Hour))
	conn := connection(alice, "twitter", "cg-1", "cg-1-refresh")
	conn.Credentials.Expiry = time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	acct, err := accounts.Upsert(ctx, pool, conn)
	if err != nil {
		t.Fatal(err)
	}
	access, refresh, expires := plaintextOf(t, pool, alice, "twitter")
	if str(access) != "cg-1" || str(refresh) != "cg-1-refresh" || expires == nil || !expires.Equal(conn.Credentials.Expiry) {
		t.Fatalf("transition mode wrote %s/%s %v, want the connect's tokens and expiry", str(access), str(refresh), expires)
	}
	// A new row too.
	if _, err := accounts.Upsert(ctx, pool, connection(bob, "twitter", "cg-bob", "")); err != nil {
		t.Fatal(err)
	}
	if access, _, _ := plaintextOf(t, pool, bob, "twitter"); str(access) != "cg-bob" {
		t.Fatalf("a new row in transition mode: %s", str(access))
	}
	// A renewal writes them too; the app's columns stay in step, so the
	// token is neither the app's nor newer.
	var renewed vault.Account
	err = vault.InTx(ctx, pool, func(tx pgx.Tx) error {
		locked, err := accounts.LockForRenewal(ctx, tx, acct.ID)
		if err != nil {
			return err
		}
		if !locked.AppReadsPlaintext || locked.Account.AppNewer {
			t.Errorf("locked %+v, want the app's columns written and credgate's token current", locked.Account)
		}
		renewed, err = accounts.CompareAndSwap(ctx, tx, locked.Account, locked.Account.Version,
			vault.Refreshed{Credentials: vault.Credentials{AccessToken: secret.New("cg-2"), RefreshToken: secret.New("cg-2-refresh")},
				WritePlaintext: locked.AppReadsPlaintext, ExpiryColumn: locked.Settings.AppExpiryColumn})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if access, refresh, _ := plaintextOf(t, pool, alice, "twitter"); str(access) != "cg-2" || str(refresh) != "cg-2-refresh" {
		t.Fatalf("after a renewal: %s/%s", str(access), str(refresh))
	}
	if a, _, err := accounts.Get(ctx, pool, alice, "twitter"); err != nil || a.AppNewer || a.Version != renewed.Version {
		t.Fatalf("after the renewal: appNewer=%v %v", a.AppNewer, err)
	}
	// migrate down's count: nothing only in the blob.
	var blobOnly int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts WHERE credentials_encrypted IS NOT NULL AND NOT app_token_current`).Scan(&blobOnly); err != nil || blobOnly != 0 {
		t.Fatalf("%d rows not in step (%v)", blobOnly, err)
	}
}

func TestExpiryColumnMustBeATimestamp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	if _, err := pool.Exec(ctx, `ALTER TABLE social_accounts ADD COLUMN expires_in integer`); err != nil {
		t.Fatal(err)
	}
	for col, want := range map[string]string{"expires_in": "must be a timestamp", "nope": "has no column", "created_at": ""} {
		err := vault.CheckExpiryColumn(ctx, pool, col)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", col, err, want)
		}
	}
	if err := vault.SetSetting(ctx, pool, "no_such_setting", "x", "test"); err == nil {
		t.Error("an unknown setting was stored")
	}
	if s, err := vault.LoadSettings(ctx, pool); err != nil || s.TransitionMode || s.AppRefreshOff || s.AppExpiryColumn != "" || len(s.PlatformNames) != 0 {
		t.Fatalf("settings %+v %v, want the defaults", s, err)
	}
}

// An app that stores X as "x": credgate finds, stores, renews, writes
// back and rotates its accounts under the app's name in the row and the
// provider's name everywhere else (the blob's binding included).
func TestTheAppsPlatformNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	if err := vault.SetSetting(ctx, pool, vault.SettingAppPlatformNames, "twitter=x", "test"); err != nil {
		t.Fatal(err)
	}
	settings, err := vault.LoadSettings(ctx, pool)
	if err != nil || settings.AppPlatform("twitter") != "x" || settings.Platform("x") != "twitter" || settings.Platform("linkedin") != "linkedin" {
		t.Fatalf("settings %+v %v", settings, err)
	}
	keys := mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1})
	accounts := vault.NewAccounts(keys)
	accounts.UseSettings(vault.Fixed(settings))
	// The app's own row, then backfill.
	if _, err := pool.Exec(ctx, `INSERT INTO social_accounts (user_id, platform, access_token) VALUES ($1, 'x', 'app-token')`, alice); err != nil {
		t.Fatal(err)
	}
	if p, err := accounts.Backfill(ctx, pool, vault.BatchOptions{}); err != nil || p.Done != 1 {
		t.Fatalf("backfill: %+v %v", p, err)
	}
	if a, c, err := accounts.Get(ctx, pool, alice, "twitter"); err != nil || c.AccessToken.Reveal() != "app-token" || a.Platform != "twitter" {
		t.Fatalf("get twitter: %q %s %v", c.AccessToken.Reveal(), a.Platform, err)
	}
	// A connect through credgate lands on the app's row, under its name.
	acct, err := accounts.Upsert(ctx, pool, connection(bob, "twitter", "cg-token", "cg-refresh"))
	if err != nil || acct.Platform != "twitter" {
		t.Fatalf("upsert: %+v %v", acct, err)
	}
	var stored string
	if err := pool.QueryRow(ctx, `SELECT platform FROM social_accounts WHERE user_id = $1`, bob).Scan(&stored); err != nil || stored != "x" {
		t.Fatalf("bob's row has platform %q (%v), want the app's x", stored, err)
	}
	list, err := accounts.List(ctx, pool, bob)
	if err != nil || len(list) != 1 || list[0].Platform != "twitter" {
		t.Fatalf("list: %+v %v", list, err)
	}
	// Write-back by credgate's platform name, and a rotation.
	if p, err := accounts.WriteBack(ctx, pool, vault.WriteBackFilter{Platform: "twitter"}, vault.BatchOptions{}); err != nil || p.Done != 1 || p.Failed != 0 {
		t.Fatalf("writeback: %+v %v", p, err)
	}
	rotated := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(2), MasterKeyID: 2, PreviousKeys: "1:" + key(1)}))
	rotated.UseSettings(vault.Fixed(settings))
	if p, err := rotated.Rewrap(ctx, pool, vault.BatchOptions{}); err != nil || p.Failed != 0 || p.Done != 2 {
		t.Fatalf("rewrap: %+v %v", p, err)
	}
	if _, c, err := rotated.Get(ctx, pool, bob, "twitter"); err != nil || c.AccessToken.Reveal() != "cg-token" {
		t.Fatalf("after the rotation: %v", err)
	}
	if _, err := rotated.Disconnect(ctx, pool, bob, "twitter"); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	if _, err := vault.ParsePlatformNames("twitter=x,linkedin=x"); err == nil {
		t.Error("one app name for two platforms was accepted")
	}
}
