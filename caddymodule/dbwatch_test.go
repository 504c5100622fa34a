package caddymodule

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/worker"
)

// A pool whose every connection is in use (a burst of token reads on a
// loaded machine) is credgate being busy, not the database being down:
// the watch used to ping through the pool, ran out of its budget three
// times while the burst held every connection, and answered 503 to
// everyone for a while (TestTokenReadsAreAuditedOncePerWindow, at load
// 20 on two cores: 180 of 700 reads answered 503 with the database
// healthy).
func TestABusyPoolIsNotAnOutage(t *testing.T) {
	h := newHarness(t, harnessOptions{databaseURL: pgtestURLWith(t, "pool_max_conns=2")})
	h.connect(alice, "twitter")
	app := currentApp(t)
	release := holdPool(t, app)
	// Before the harness's stop, which waits for every connection.
	defer release()
	// Longer than DefaultSlowOutage pings of DefaultPingTimeout each, and then some.
	deadline := time.Now().Add(worker.DefaultSlowOutage*worker.DefaultPingTimeout + 2*time.Second)
	for time.Now().Before(deadline) {
		if app.run.databaseWatch.Down() {
			release()
			t.Fatal("a busy pool was declared a database outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	release()
	if resp, body := h.do("GET", "/api/credentials/status", alice, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the burst: %d %s", resp.StatusCode, body)
	}
}

// pgtestURLWith is a fresh migrated database's URL with more query
// parameters.
func pgtestURLWith(t *testing.T, params string) string {
	u := pgtest.Database(t)
	if strings.Contains(u, "?") {
		return u + "&" + params
	}
	return u + "?" + params
}

// holdPool takes every connection of app's pool until release is called.
func holdPool(t *testing.T, app *App) (release func()) {
	t.Helper()
	var held []*pgxpool.Conn
	release = func() {
		for _, c := range held {
			c.Release()
		}
		held = nil
	}
	for range int(app.pool.Stat().MaxConns()) {
		c, err := app.pool.Acquire(context.Background())
		if err != nil {
			release()
			t.Fatal(err)
		}
		held = append(held, c)
	}
	return release
}

// A database too slow to answer a ping within the decision's budget (a
// pool whose every connection is in use, as on a loaded machine) is
// slow, not down: the rollout still sends its users to the new flow.
// The decision used to read store_unavailable off one 250 ms ping, and
// the rollout test failed so in a loaded CI run (user 522 at 75 %).
func TestASlowDatabaseStillStartsTheNewFlow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	setRollout(t, path, true, 100)
	h := newHarness(t, harnessOptions{databaseURL: pgtestURLWith(t, "pool_max_conns=2"), flagsFile: path,
		legacyRedirect: true, extraSite: "legacy_start /api/{platform}/connect\n"})
	app := currentApp(t)
	waitUntil(t, 10*time.Second, func() bool { return app.Rollout().Ready() })
	release := holdPool(t, app)
	defer release()
	a := h.decision(alice, "twitter", "")
	release()
	if a.Flow != "new" || a.Reason != "rollout" {
		t.Fatalf("with the pool busy, the decision was %s (%s), want new (rollout)", a.Flow, a.Reason)
	}
}
