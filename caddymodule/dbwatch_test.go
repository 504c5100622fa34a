package caddymodule

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
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
	var held []*pgxpool.Conn
	release := func() {
		for _, c := range held {
			c.Release()
		}
		held = nil
	}
	// Before the harness's stop, which waits for every connection.
	defer release()
	for range int(app.pool.Stat().MaxConns()) {
		c, err := app.pool.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// Longer than slowOutage pings of pingTimeout each, and then some.
	deadline := time.Now().Add(slowOutage*pingTimeout + 2*time.Second)
	for time.Now().Before(deadline) {
		if app.run.databaseDown.Load() {
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
