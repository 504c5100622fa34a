package report

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/migrations"
	"github.com/credgate/credgate/vault"
)

// The parts of the admin service-health report that are read from the
// database. Each returns its JSON section and whether it leaves credgate
// healthy; the route (caddymodule) puts them beside the instance's own
// state (the database watch, the keyring, the flag source, the guard).

// DefaultOverdueGrace is how long a due refresh job may wait before it is
// called overdue: workers claim due jobs within seconds.
const DefaultOverdueGrace = 5 * time.Minute

// QueueHealth reports the refresh queue. Overdue jobs make the service
// unhealthy, since they mean no worker is keeping up; so does a queue
// that cannot be read while the database is up.
func QueueHealth(ctx context.Context, db vault.DB, now time.Time, dbUp bool) (view map[string]any, healthy bool) {
	if !dbUp {
		return map[string]any{"ok": false, "error": "database unreachable"}, true
	}
	st, err := vault.ReadQueueStats(ctx, db, now, DefaultOverdueGrace)
	if err != nil {
		return map[string]any{"ok": false, "error": "cannot read the refresh queue"}, false
	}
	view = map[string]any{"ok": st.Overdue == 0, "pending": st.Pending, "due": st.Due, "running": st.Running,
		"overdue": st.Overdue, "dead": st.Dead, "oldest_due_seconds": int64(st.OldestDue.Seconds())}
	if st.Overdue > 0 {
		view["error"] = fmt.Sprintf("%d refresh jobs are overdue: are the refresh workers running?", st.Overdue)
		return view, false
	}
	return view, true
}

// MigrationHealth is how credgate shares social_accounts with the app
// (the operator's settings) and whether the app's back end reads its
// tokens through credgate (every replica's token API and egress reads
// over the last hour, per platform): the runbook's first rule is that it
// does before any percentage rises. Neither makes credgate unhealthy.
func MigrationHealth(ctx context.Context, db vault.DB, settings vault.SettingsSource, platforms []string, dbUp bool) map[string]any {
	out := map[string]any{}
	if s, err := settings.Get(ctx); err == nil {
		out["transition_mode"] = s.TransitionMode
		out["app_refresh"] = !s.AppRefreshOff
		out["app_expiry_column"] = s.AppExpiryColumn
		if s.TransitionMode {
			out["warning"] = "transition mode is on: connects and renewals write plaintext tokens to the app's columns; turn it off (caddy credgate transition off) once the back end reads through credgate"
		}
	} else {
		out["error"] = "settings not read: " + err.Error()
	}
	if !dbUp {
		return out
	}
	reads, err := vault.BackendReadsIn(ctx, db, vault.BackendReadWindow)
	if err != nil {
		out["backend_reads_error"] = "not read: " + dberr.OneLine(err.Error())
		return out
	}
	perPlatform := map[string]any{}
	for _, name := range platforms {
		c := reads[name]
		perPlatform[name] = map[string]any{"token_api": c.TokenAPI, "egress": c.Egress}
	}
	out["backend_reads_last_hour"] = perPlatform
	return out
}

// AppTableEvery is how often AppTable reads the preflight of the app's
// social_accounts again; in between it answers from the last read.
const AppTableEvery = 30 * time.Second

// AppTable is the preflight of the app's social_accounts on one
// database: what credgate's statements need of it
// (migrations.PreflightCatalog, the catalog only, no row read), read at
// most every AppTableEvery. Safe for concurrent use.
type AppTable struct {
	mu       sync.Mutex
	tried    time.Time // the last read, answered or not
	at       time.Time // the last answered read; zero before one
	problems migrations.Problems
	err      error // the last read's error, if it failed
}

// Expire makes the next Health read the preflight again, whatever the
// time since the last read (the last answer is kept until then).
func (c *AppTable) Expire() {
	c.mu.Lock()
	c.tried = time.Time{}
	c.mu.Unlock()
}

// Health reads the preflight within ctx's budget when the last read is
// AppTableEvery old and the database is up, and reports it. A problem
// makes credgate unhealthy (every connect would fail on it); a read that
// fails keeps the last answer and makes nothing unhealthy by itself (the
// database check reports an outage).
func (c *AppTable) Health(ctx context.Context, db vault.DB, dbUp bool) (view map[string]any, healthy bool) {
	c.mu.Lock()
	if dbUp && time.Since(c.tried) >= AppTableEvery {
		c.tried = time.Now()
		problems, err := migrations.PreflightCatalog(ctx, db)
		if c.err = err; err == nil {
			c.problems, c.at = problems, c.tried
		}
	}
	problems, at, err := c.problems, c.at, c.err
	c.mu.Unlock()

	out := map[string]any{"every": AppTableEvery.String()}
	if at.IsZero() {
		out["ok"] = false
		out["error"] = "not read yet"
		if err != nil {
			out["error"] = "not read yet: " + dberr.OneLine(err.Error())
		}
		return out, true
	}
	out["checked_at"] = at.UTC()
	if err != nil {
		out["read_error"] = "the last read failed, this is the one before: " + dberr.OneLine(err.Error())
	}
	errs := problems.Errors()
	out["ok"] = len(errs) == 0
	healthy = len(errs) == 0
	if !healthy {
		out["error"] = "social_accounts lacks what credgate's statements need: every connect fails until it is fixed (caddy credgate migrate status lists the same)"
		out["problems"] = errs
	}
	if warns := problems.Warnings(); len(warns) > 0 {
		out["warnings"] = warns
	}
	return out, healthy
}
