package commands

import (
	"context"
	"encoding/base64"
	neturl "net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/credgate/credgate/internal/pgtest"
)

func TestKeygenPrintsA32ByteKey(t *testing.T) {
	t.Parallel()
	out1, err := runCLI(t, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	out2, _ := runCLI(t, "keygen")
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out1))
	if err != nil || len(key) != 32 {
		t.Fatalf("keygen printed %q: %d bytes, %v; want base64 of 32 bytes", out1, len(key), err)
	}
	if out1 == out2 {
		t.Error("two keygen runs printed the same key")
	}
}

func TestMigrateUpStatusDown(t *testing.T) {
	// Not parallel: t.Setenv.
	url := pgtest.EmptyDatabase(t)

	out, err := runCLI(t, "migrate", "status", "--database-url", url)
	if err == nil || !strings.Contains(err.Error(), "schema is incomplete") {
		t.Fatalf("status of an empty database: err %v, want a non-zero exit saying the schema is incomplete", err)
	}
	for _, want := range []string{"Applied version: none", "✗ oauth_states", "Schema incomplete"} {
		if !strings.Contains(out, want) {
			t.Errorf("status before up lacks %q:\n%s", want, out)
		}
	}

	out, err = runCLI(t, "migrate", "up", "--database-url", url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"✓ Created table: oauth_states\n",
		"✓ Created table: credential_audit_log\n",
		"✓ Created table: token_refresh_queue\n",
		"✓ Added columns to social_accounts: credentials_encrypted,",
		"✓ Added columns to credential_audit_log: events\n",
		"✓ Enabled RLS policies: oauth_states, credential_audit_log, token_refresh_queue, encryption_keys, credential_audit_daily, credential_audit_rollups, rollout_outcomes, rollout_halts, rollout_decisions, renewal_leases, credgate_settings, backend_reads, legacy_flows, credgate_webhook_outbox\n",
		"✓ Schema at version 9\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("up output lacks %q:\n%s", want, out)
		}
	}

	out, err = runCLI(t, "migrate", "up", "--database-url", url)
	if err != nil || out != "✓ Already up to date (version 9)\n" {
		t.Errorf("second up: %q, %v", out, err)
	}

	t.Setenv("DATABASE_URL", url) // the flag is optional
	out, err = runCLI(t, "migrate", "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Applied version: 9 (clean)", "✓ token_refresh_queue", "✓ connected_via", "Columns on credential_audit_log:\n  ✓ events\n", "Schema complete."} {
		if !strings.Contains(out, want) {
			t.Errorf("status after up lacks %q:\n%s", want, out)
		}
	}

	out, err = runCLI(t, "migrate", "down")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"✓ Dropped table: oauth_states", "✓ Kept social_accounts", "✓ Schema at version 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("down output lacks %q:\n%s", want, out)
		}
	}
}

// Every failure is one line, says what went wrong, and never echoes a
// password from the URL.
func TestMigrateErrorsAreOneLine(t *testing.T) {
	// Not parallel: t.Setenv.
	t.Setenv("DATABASE_URL", "")
	noPrivs := noPrivilegeURL(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{"migrate", "up"}, "no database URL"},
		{"bad url", []string{"migrate", "up", "--database-url", "postgres://u:hunter2@[::1"}, "database URL is not valid"},
		{"not a url", []string{"migrate", "status", "--database-url", "mysql://u:hunter2@localhost/db"}, "database URL is not valid"},
		{"unreachable", []string{"migrate", "up", "--database-url", "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=2"}, "connecting to database \"db\" on 127.0.0.1:1"},
		{"missing privilege", []string{"migrate", "up", "--database-url", noPrivs}, "permission denied for schema public (SQLSTATE 42501)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, tc.args...)
			if err == nil {
				t.Fatal("expected an error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "hunter2") {
				t.Errorf("error %q: want one line containing %q and no password", msg, tc.want)
			}
			// What the operator sees: one plain line, not a JSON log entry.
			if out != "Error: "+msg+"\n" {
				t.Errorf("printed %q, want the one line %q", out, "Error: "+msg)
			}
		})
	}
}

// noPrivilegeURL returns a URL for a login role that may connect to a fresh
// database but not create anything in it.
func noPrivilegeURL(t *testing.T) string {
	t.Helper()
	url := pgtest.EmptyDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	role := "cgtest_noprivs_" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_"))
	ident := pgx.Identifier{role}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE ROLE `+ident+` LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pgtest.ServerURL())
		if err == nil {
			defer c.Close(context.Background())
			c.Exec(context.Background(), `DROP ROLE IF EXISTS `+ident)
		}
	})
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(role, "hunter2")
	return u.String()
}
