package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/credgate/credgate/internal/waitgroup"
	"github.com/credgate/credgate/telemetry"
	"github.com/credgate/credgate/webhook"
)

// Loops are the background loops of one credgate instance: the refresh
// workers, the scheduler, the cleanup and the roll-up. Start them once
// per config; Stop ends them within a bounded wait.
type Loops struct {
	Workers *Workers
	// ScheduleInterval is how often unscheduled accounts are looked
	// for. Default 1m.
	ScheduleInterval time.Duration
	// CleanupInterval is how often expired states are deleted. Default 5m.
	CleanupInterval time.Duration
	// RollupInterval is how often finished days are rolled up. Default 1h.
	RollupInterval time.Duration
	// OnCleanup, if set, sees how many expired states each cleanup
	// deleted.
	OnCleanup func(deleted int64)
	// Webhooks, when set, delivers the app's webhook events, looking for
	// due ones every WebhookInterval (default 1s); the cleanup prunes
	// delivered events after a week and failed ones after 30 days.
	Webhooks        *webhook.Deliverer
	WebhookInterval time.Duration

	cancel     context.CancelFunc
	cancelJobs context.CancelFunc
	wg         sync.WaitGroup
	last       struct{ cleanup, schedule, rollup, webhooks atomic.Int64 } // unix nanos of the last good run
}

// Start starts every loop.
func (l *Loops) Start() {
	if l.ScheduleInterval <= 0 {
		l.ScheduleInterval = time.Minute
	}
	if l.CleanupInterval <= 0 {
		l.CleanupInterval = DefaultCleanupInterval
	}
	if l.RollupInterval <= 0 {
		l.RollupInterval = time.Hour
	}
	ctx, cancel := context.WithCancel(context.Background())
	jobCtx, cancelJobs := context.WithCancel(context.Background())
	l.cancel, l.cancelJobs = cancel, cancelJobs
	r := l.Workers.Refresher
	l.Workers.defaults() // before the loops below read Ready
	l.wg.Go(func() { l.Workers.Run(ctx, jobCtx) })
	l.every(ctx, "scheduler", l.ScheduleInterval, &l.last.schedule, func(ctx context.Context) error {
		n, err := ScheduleUnscheduled(ctx, r.DB, r.now())
		if n > 0 {
			r.logger().Info("scheduled refresh jobs for unscheduled accounts", zap.Int64("queued", n))
		}
		return err
	})
	if l.Webhooks != nil {
		l.wg.Go(func() { l.deliverWebhooks(ctx, jobCtx) })
	}
	l.every(ctx, "cleanup", l.CleanupInterval, &l.last.cleanup, func(ctx context.Context) error {
		if l.Webhooks != nil {
			now := r.now()
			if _, err := l.Webhooks.Outbox.Prune(ctx, r.DB, now.Add(-WebhookDeliveredKept), now.Add(-WebhookFailedKept)); err != nil {
				return err
			}
		}
		res, err := Cleanup(ctx, r.DB, r.now(), "schedule", false)
		if l.OnCleanup != nil && err == nil {
			l.OnCleanup(res.States)
		}
		if res.States > 0 || res.Jobs > 0 {
			r.logger().Info("cleaned up", zap.Int64("expired_states", res.States), zap.Int64("finished_jobs", res.Jobs))
		}
		return err
	})
	l.every(ctx, "audit roll-up", l.RollupInterval, &l.last.rollup, func(ctx context.Context) error {
		days, err := RollUp(ctx, r.DB, time.Now())
		if len(days) > 0 {
			r.logger().Info("rolled up the audit log", zap.Int("days", len(days)))
		}
		return err
	})
}

// every runs fn now and then every interval (with jitter, so replicas
// drift apart) until ctx is done, logging failures and recovering panics.
func (l *Loops) every(ctx context.Context, name string, interval time.Duration, last *atomic.Int64, fn func(context.Context) error) {
	log := l.Workers.Refresher.logger()
	l.wg.Go(func() {
		// A first run soon after start, not at once: a reload starts the
		// new config before the old one stops.
		wait := rand.N(interval/10 + time.Second)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = interval + rand.N(interval/10+1)
			if !l.Workers.Ready() {
				continue
			}
			func() {
				defer func() {
					if p := recover(); p != nil {
						log.Error("background loop panicked", zap.String("loop", name), zap.Any("panic", p))
					}
				}()
				rctx, cancel := context.WithTimeout(ctx, max(interval, time.Minute))
				defer cancel()
				rctx, span := l.Workers.Refresher.tracer().Start(rctx, "credgate.loop."+strings.ReplaceAll(name, " ", "_"))
				code := "loop_failed" // until fn returns cleanly; also on a panic
				defer func() { telemetry.End(span, code) }()
				err := fn(rctx)
				if err == nil {
					code = ""
				}
				if err != nil {
					if ctx.Err() == nil {
						log.Warn("background loop failed; it runs again next interval", zap.String("loop", name), zap.Error(err))
					}
					return
				}
				last.Store(time.Now().UnixNano())
			}()
		}
	})
}

// How long the cleanup keeps finished webhook events.
const (
	WebhookDeliveredKept = 7 * 24 * time.Hour
	WebhookFailedKept    = 30 * 24 * time.Hour
)

// deliverWebhooks delivers the due webhook events every WebhookInterval,
// round after round while there are more: an outbox that filled up
// during an outage drains at once rather than a batch a second. It stops
// claiming when ctx ends; deliveries in flight run on jobCtx, so a stop
// lets them finish within its grace.
func (l *Loops) deliverWebhooks(ctx, jobCtx context.Context) {
	log := l.Workers.Refresher.logger()
	interval := l.WebhookInterval
	if interval <= 0 {
		interval = time.Second
	}
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		if !l.Workers.Ready() {
			continue
		}
		for ctx.Err() == nil {
			n, err := func() (n int, err error) {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("panic: %v", p)
					}
				}()
				return l.Webhooks.DeliverDue(jobCtx)
			}()
			if err != nil {
				if !failing && ctx.Err() == nil {
					log.Warn("webhook delivery: the outbox could not be read or updated; retrying every interval", zap.Error(err))
				}
				failing = true
				break
			}
			failing = false
			l.last.webhooks.Store(time.Now().UnixNano())
			if n == 0 {
				break
			}
		}
	}
}

// Stop stops claiming at once, lets running jobs finish for up to grace,
// then cancels them (their leases expire and another replica retries).
func (l *Loops) Stop(grace time.Duration) {
	if l.cancel == nil {
		return
	}
	l.cancel()
	if !waitgroup.Within(&l.wg, grace) {
		l.cancelJobs()
		l.wg.Wait()
	}
	l.cancelJobs()
}

// LastRuns reports when each periodic loop last succeeded in this
// process (zero: never).
func (l *Loops) LastRuns() map[string]time.Time {
	out := map[string]time.Time{}
	for name, v := range map[string]*atomic.Int64{"cleanup": &l.last.cleanup, "scheduler": &l.last.schedule, "rollup": &l.last.rollup, "webhooks": &l.last.webhooks} {
		if n := v.Load(); n > 0 {
			out[name] = time.Unix(0, n)
		}
	}
	return out
}
