package vault_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/vault"
)

// outboxRows are the outbox's events, oldest first, as "kind platform
// data".
func outboxRows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT kind, platform, data::text, account_id::text, user_id::text
		FROM credgate_webhook_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var kind, platform, data, account, user string
		err := r.Scan(&kind, &platform, &data, &account, &user)
		if account == "" || user == "" {
			t.Errorf("an event without its account or user: %s", kind)
		}
		return kind + " " + platform + " " + data, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Each change the app hears of writes its event with the change, and
// only when the status changed; no token is in any.
func TestAccountChangesAnnounceThemselves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	accounts.UseOutbox(vault.NewOutbox())
	audit := func(string) vault.Event {
		return vault.Event{UserID: alice, Platform: "twitter", Action: vault.ActionConnect}
	}

	acct, err := accounts.StoreConnect(ctx, pool, connection(alice, "twitter", "at-secret-1", "rt-secret-1"), time.Time{}, audit)
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	for range 2 { // the second finds it expiring already: no second event
		if err := accounts.MarkExpiring(ctx, pool, acct, expires); err != nil {
			t.Fatal(err)
		}
	}
	if err := accounts.MarkNeedsReauth(ctx, pool, acct, "invalid_grant"); err != nil {
		t.Fatal(err)
	}
	bobs, err := accounts.StoreConnect(ctx, pool, connection(bob, "linkedin", "at-secret-2", ""), time.Time{}, audit)
	if err != nil {
		t.Fatal(err)
	}
	if err := accounts.MarkNeedsReauth(ctx, pool, bobs, "needs_reauth"); err != nil {
		t.Fatal(err)
	}
	if err := accounts.Announce(ctx, pool, vault.AccountEvent{Kind: vault.EventRefreshFailed, AccountID: bobs.ID, UserID: bob,
		Platform: "linkedin", Data: map[string]any{"reason": "provider_unavailable", "attempts": 8}}); err != nil {
		t.Fatal(err)
	}
	err = vault.InTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := accounts.Disconnect(ctx, tx, alice, "twitter")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`account.connected twitter {"scopes": ["tweet.read", "offline.access"], "connected_via": "credgate"}`,
		`account.expiring twitter {"expires_at": "2027-01-02T03:04:05Z"}`,
		`account.revoked twitter {"reason": "invalid_grant"}`,
		`account.connected linkedin {"scopes": ["tweet.read", "offline.access"], "connected_via": "credgate"}`,
		`account.needs_reauth linkedin {"reason": "needs_reauth"}`,
		`account.refresh_failed linkedin {"reason": "provider_unavailable", "attempts": 8}`,
		`account.disconnected twitter {}`,
	}
	got := outboxRows(t, pool)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(strings.Join(got, ""), "secret") {
		t.Error("an event holds a token")
	}
}

// An event exists exactly when its change committed.
func TestAnEventIsWrittenWithItsChangeOrNotAtAll(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
	accounts.UseOutbox(vault.NewOutbox())
	acct, err := accounts.Upsert(ctx, pool, connection(alice, "twitter", "at", "rt"))
	if err != nil {
		t.Fatal(err)
	}
	if got := outboxRows(t, pool); len(got) != 0 {
		t.Fatalf("a backfill (no connect) announced: %v", got)
	}
	rollback := errors.New("the change's transaction fails after the mark")
	err = vault.InTx(ctx, pool, func(tx pgx.Tx) error {
		if err := accounts.MarkNeedsReauth(ctx, tx, acct, "invalid_grant"); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if got := outboxRows(t, pool); len(got) != 0 {
		t.Fatalf("an event whose change was rolled back: %v", got)
	}
	// A connect whose statement fails (the row took another id) writes
	// no event either: the event is part of the statement.
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM social_accounts`).Scan(&n); err != nil || n != 1 {
		t.Fatal(n, err)
	}
}

// Kinds the webhook does not subscribe to are never written, and with no
// webhook nothing is.
func TestOnlyWantedEventsAreWritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		outbox *vault.Outbox
		want   []string
	}{
		{"no webhook", nil, nil},
		{"revoked only", vault.NewOutbox(vault.EventRevoked), []string{`account.revoked twitter {"reason": "invalid_grant"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := newPool(t)
			accounts := vault.NewAccounts(mustKeyring(t, vault.KeyConfig{MasterKey: key(1)}))
			accounts.UseOutbox(tc.outbox)
			acct, err := accounts.StoreConnect(ctx, pool, connection(alice, "twitter", "at", "rt"), time.Time{},
				func(string) vault.Event {
					return vault.Event{UserID: alice, Platform: "twitter", Action: vault.ActionConnect}
				})
			if err != nil {
				t.Fatal(err)
			}
			if err := accounts.MarkNeedsReauth(ctx, pool, acct, "invalid_grant"); err != nil {
				t.Fatal(err)
			}
			if got := outboxRows(t, pool); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("events %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAccountEventKindsParse(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]vault.AccountEventKind{"connected": vault.EventConnected, "account.revoked": vault.EventRevoked,
		"refresh_failed": vault.EventRefreshFailed} {
		if got, err := vault.ParseAccountEventKind(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := vault.ParseAccountEventKind("account.deleted"); err == nil || !strings.Contains(err.Error(), "account.refresh_failed") {
		t.Errorf("an unknown kind: %v", err)
	}
	b, _ := json.Marshal(vault.AccountEventKinds)
	if string(b) != `["account.connected","account.disconnected","account.expiring","account.needs_reauth","account.revoked","account.refresh_failed"]` {
		t.Error(string(b))
	}
}
