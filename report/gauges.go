package report

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

var (
	queueJobsDesc = prometheus.NewDesc("credgate_refresh_queue_jobs",
		"Refresh jobs by status (pending, due, running, overdue, dead).", []string{"status"}, nil)
	oldestDueDesc = prometheus.NewDesc("credgate_refresh_oldest_pending_seconds",
		"How long the longest-waiting due refresh job has waited.", nil, nil)
	accountsDesc = prometheus.NewDesc("credgate_accounts",
		"Accounts by platform and status (connected, expiring, needs_reauth, revoked, disconnected).", []string{"platform", "status"}, nil)
)

// StoreGauges are the refresh queue's and the accounts' gauges, read from
// db at scrape time (telemetry.CachedGauges) while ready says the
// database can be read. Every configured platform × status is written,
// zeros included: a series that appears only at its first non-zero value
// hides the jump from zero that an alert wants to see.
func StoreGauges(db vault.DB, accounts *vault.Accounts, platforms []string, now func() time.Time, ready func() bool) *telemetry.CachedGauges {
	return &telemetry.CachedGauges{
		Descs: []*prometheus.Desc{queueJobsDesc, oldestDueDesc, accountsDesc},
		Ready: ready,
		Read: func(ctx context.Context) ([]prometheus.Metric, error) {
			st, err := vault.ReadQueueStats(ctx, db, now(), DefaultOverdueGrace)
			if err != nil {
				return nil, err
			}
			var out []prometheus.Metric
			for status, n := range map[string]int64{"pending": st.Pending, "due": st.Due, "running": st.Running, "overdue": st.Overdue, "dead": st.Dead} {
				out = append(out, prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, float64(n), status))
			}
			out = append(out, prometheus.MustNewConstMetric(oldestDueDesc, prometheus.GaugeValue, st.OldestDue.Seconds()))
			counted, err := accounts.CountByStatus(ctx, db, platforms)
			if err != nil {
				return nil, err
			}
			for _, p := range platforms {
				for _, s := range []vault.Status{vault.StatusConnected, vault.StatusExpiring, vault.StatusNeedsReauth, vault.StatusRevoked, vault.StatusDisconnected} {
					out = append(out, prometheus.MustNewConstMetric(accountsDesc, prometheus.GaugeValue, float64(counted[p][s]), p, string(s)))
				}
			}
			return out, nil
		},
	}
}

// WebhookHealth is the webhook's part of service-health: where events go
// (target, without its credentials or query), and the outbox at a
// glance. A failing webhook does not make credgate unhealthy (it serves
// all the same); it says so here, in the metrics and in the log.
func WebhookHealth(ctx context.Context, db vault.DB, outbox *vault.Outbox, target string, now time.Time, dbUp bool) map[string]any {
	out := map[string]any{"configured": true, "url": target}
	if !dbUp {
		out["ok"] = false
		out["error"] = "database unavailable"
		return out
	}
	st, err := outbox.Stats(ctx, db)
	if err != nil {
		out["ok"] = false
		out["error"] = err.Error()
		return out
	}
	out["ok"] = st.Failing == 0 && st.Failed == 0
	out["pending"], out["failing"], out["failed"] = st.Pending, st.Failing, st.Failed
	if !st.OldestPending.IsZero() {
		out["oldest_pending_seconds"] = int64(now.Sub(st.OldestPending).Seconds())
	}
	if st.LastError != "" {
		out["last_error"] = st.LastError
	}
	return out
}
