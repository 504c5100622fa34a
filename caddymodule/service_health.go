package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/report"
)

// serviceHealth: GET /api/credentials/service-health (admin)
func (h *Handler) serviceHealth(w http.ResponseWriter, r *http.Request) {
	if !h.gw.AdminAllowed(r) {
		answer.Error(w, http.StatusUnauthorized, "unauthorized", "admin token required")
		return
	}
	// Answer at once, also in a partition: the database's state is the
	// watch's (it pings every few seconds), and the one query below gets
	// a short budget.
	ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
	defer cancel()
	healthy := true
	check := func(err error) map[string]any {
		if err != nil {
			healthy = false
			return map[string]any{"ok": false, "error": err.Error()}
		}
		return map[string]any{"ok": true}
	}
	var dbErr error
	switch {
	case h.app.run.databaseWatch.Down():
		dbErr = errors.New("unreachable")
	case !h.app.Available():
		dbErr = errors.New("key check has not passed")
	}
	var flagsErr error
	if !h.app.rollout.Ready() {
		flagsErr = errors.New("flag provider not ready: every user is on the legacy flow")
	}
	flagsView := check(flagsErr)
	if h.app.flagSource != nil {
		// The source's own state: read when, rolling out what, and why
		// not — also before it was ever reached, when the why matters most.
		flagsView = h.app.flagSource.SourceState()
		if flagsErr != nil {
			flagsView["ok"] = false
			if flagsView["error"] == nil {
				flagsView["error"] = flagsErr.Error()
			}
		}
		if flagsView["ok"] != true {
			healthy = false
		}
	}
	providers := map[string]any{}
	for name := range h.app.Providers {
		if _, ok := h.gw.Providers[name]; ok {
			providers[name] = map[string]any{"ok": true}
		}
	}
	queue, queueOK := report.QueueHealth(ctx, h.app.pool, h.app.now(), dbErr == nil)
	healthy = healthy && queueOK
	body := map[string]any{
		"database":      check(dbErr),
		"keyring":       h.app.keyringHealth(),
		"flags":         flagsView,
		"providers":     providers,
		"refresh_queue": queue,
		"background":    h.app.backgroundHealth(),
		"guard":         h.app.guard.Health(),
		"identity":      h.gw.IdentityHealth(),
		"migration":     report.MigrationHealth(ctx, h.app.pool, h.app.settings, h.app.platforms(), dbErr == nil),
		"schema":        h.appTableHealth(ctx, dbErr == nil, &healthy),
		"webhooks":      h.app.webhookHealth(ctx, dbErr == nil),
	}
	status := http.StatusOK
	if !healthy {
		status = http.StatusServiceUnavailable
	}
	body["ok"] = healthy
	answer.JSON(w, status, body)
}

// appTableChecks holds the app table's last preflight per database pool
// (weakly: an entry goes with its pool, after a reload).
var appTableChecks sync.Map // weak.Pointer[pgxpool.Pool] → *report.AppTable

// appTableHealth is report.AppTable for this config's pool.
func (h *Handler) appTableHealth(ctx context.Context, dbUp bool, healthy *bool) map[string]any {
	pool := h.app.pool
	if pool == nil {
		return map[string]any{"ok": false, "error": "not read: no database pool"}
	}
	key := weak.Make(pool)
	v, loaded := appTableChecks.LoadOrStore(key, &report.AppTable{})
	if !loaded {
		runtime.AddCleanup(pool, func(k weak.Pointer[pgxpool.Pool]) { appTableChecks.Delete(k) }, key)
	}
	view, ok := v.(*report.AppTable).Health(ctx, pool, dbUp)
	*healthy = *healthy && ok
	return view
}
