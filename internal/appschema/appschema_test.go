package appschema_test

import (
	"context"
	"testing"

	"github.com/credgate/credgate/internal/appschema"
	"github.com/credgate/credgate/internal/pgtest"
)

func TestSQLFillsInTheNamesTheColumnsHave(t *testing.T) {
	const q = `UPDATE social_accounts SET {status} = 'connected', {expires_at} = $1, {scopes} = '{}' WHERE status = 'x'`
	if got, want := (appschema.Columns{}).SQL(q), `UPDATE social_accounts SET status = 'connected', expires_at = $1, scopes = '{}' WHERE status = 'x'`; got != want {
		t.Errorf("standard:\n%s\nwant\n%s", got, want)
	}
	moved := appschema.Of([]string{"status", "nonsense"})
	if got, want := moved.SQL(q), `UPDATE social_accounts SET credgate_status = 'connected', expires_at = $1, scopes = '{}' WHERE status = 'x'`; got != want {
		t.Errorf("status moved:\n%s\nwant\n%s", got, want)
	}
	if moved.Name("expires_at") != "expires_at" || moved.Name("status") != "credgate_status" || moved.Standard() {
		t.Errorf("names: %+v", moved)
	}
}

// Load reads the moved columns off the catalog: only credgate's
// (commented) credgate_ columns count.
func TestLoadReadsTheCatalog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t)
	pool := pgtest.Pool(t, url)
	if c, err := appschema.Load(ctx, pool); err != nil || !c.Standard() {
		t.Fatalf("no table: %+v %v", c, err)
	}
	pgtest.Exec(t, url, `CREATE TABLE social_accounts (id uuid, credgate_status text, credgate_scopes text[]);
		COMMENT ON COLUMN social_accounts.credgate_scopes IS 'credgate: scopes granted'`)
	c, err := appschema.Load(ctx, pool)
	if err != nil || len(c.Moved) != 1 || c.Moved[0] != "scopes" {
		t.Fatalf("moved = %+v %v, want scopes alone (credgate_status has no credgate comment)", c, err)
	}
}
