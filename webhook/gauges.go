package webhook

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/vault"
)

var (
	outboxEventsDesc = prometheus.NewDesc("credgate_webhook_outbox_events",
		"Account events in the webhook outbox by state: pending (not delivered yet), failing (pending, and the last attempt failed), failed (given up after retry_for, kept).", []string{"state"}, nil)
	outboxOldestDesc = prometheus.NewDesc("credgate_webhook_outbox_oldest_pending_seconds",
		"Age of the oldest account event not delivered yet (0 when none).", nil, nil)
)

// OutboxGauges are the outbox's gauges, read from db at scrape time
// (telemetry.CachedGauges) while ready says the database can be read.
func OutboxGauges(outbox *vault.Outbox, db vault.DB, now func() time.Time, ready func() bool) *telemetry.CachedGauges {
	return &telemetry.CachedGauges{
		Descs: []*prometheus.Desc{outboxEventsDesc, outboxOldestDesc},
		Ready: ready,
		Read: func(ctx context.Context) ([]prometheus.Metric, error) {
			st, err := outbox.Stats(ctx, db)
			if err != nil {
				return nil, err
			}
			oldest := 0.0
			if !st.OldestPending.IsZero() {
				oldest = now().Sub(st.OldestPending).Seconds()
			}
			return []prometheus.Metric{
				prometheus.MustNewConstMetric(outboxEventsDesc, prometheus.GaugeValue, float64(st.Pending), "pending"),
				prometheus.MustNewConstMetric(outboxEventsDesc, prometheus.GaugeValue, float64(st.Failing), "failing"),
				prometheus.MustNewConstMetric(outboxEventsDesc, prometheus.GaugeValue, float64(st.Failed), "failed"),
				prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, oldest),
			}, nil
		},
	}
}
