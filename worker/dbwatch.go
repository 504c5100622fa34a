package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// The database watch's timings. A new connection may take a while on a
// loaded machine (a dial, TLS, authentication, all on a busy CPU): slow is
// not down. The watch declares an outage when the database refuses (a
// ping that fails before its budget), or when DefaultSlowOutage pings in a
// row run out of their budget (a partition: nothing answers at all).
const (
	DefaultWatchEvery  = time.Second
	DefaultPingTimeout = 2 * time.Second
	DefaultSlowOutage  = 3
)

// DatabaseWatch pings PostgreSQL every Every while it runs and keeps Down
// current, logging each change once. With it, a database that refuses
// turns every credgate route into an immediate 503 within about Every,
// one that stops answering within SlowOutage pings (about 6 s by
// default), and the routes serve again within Every of the database
// answering. One slow ping on a loaded machine is not an outage, and
// neither is a pool whose every connection is in use (Busy).
type DatabaseWatch struct {
	Pool   *pgxpool.Pool
	Logger *zap.Logger
	// Every, PingTimeout and SlowOutage default to DefaultWatchEvery,
	// DefaultPingTimeout and DefaultSlowOutage.
	Every       time.Duration
	PingTimeout time.Duration
	SlowOutage  int

	down atomic.Bool
}

// Down reports whether the last verdict was an outage.
func (w *DatabaseWatch) Down() bool { return w.down.Load() }

// Run watches until ctx ends.
func (w *DatabaseWatch) Run(ctx context.Context) {
	every, budget, slowOutage := w.Every, w.PingTimeout, w.SlowOutage
	if every <= 0 {
		every = DefaultWatchEvery
	}
	if budget <= 0 {
		budget = DefaultPingTimeout
	}
	if slowOutage <= 0 {
		slowOutage = DefaultSlowOutage
	}
	log := w.Logger
	if log == nil {
		log = zap.NewNop()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	slow := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, budget)
		busy, err := w.ping(pctx)
		timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if busy {
			// Every connection is in use and none came free in time:
			// credgate is busy, which says nothing of the database
			// (requests hold the connections; a partition would end
			// them at their own timeouts and free the pool).
			continue
		}
		switch {
		case err == nil:
			slow = 0
		case timedOut:
			slow++
		}
		down := err != nil && (!timedOut || slow >= slowOutage)
		if err != nil && !down {
			continue // slow, not (yet) down: keep the last verdict
		}
		if w.down.Swap(down) != down {
			if down {
				log.Warn("database not answering; credgate routes answer 503 until it does", zap.Error(err))
			} else {
				log.Info("database answering again; credgate routes are serving")
			}
		}
	}
}

// ping asks PostgreSQL for an answer through the pool. busy is true when
// no connection could be had because all of them were in use (a burst of
// requests on a loaded machine), not because the database did not
// answer: before, a saturated pool read as an outage, and the burst
// turned into 503s for everyone (TestTokenReadsAreAuditedOncePerWindow
// at load 20).
func (w *DatabaseWatch) ping(ctx context.Context) (busy bool, err error) {
	conn, err := w.Pool.Acquire(ctx)
	if err != nil {
		st := w.Pool.Stat()
		return ctx.Err() != nil && st.AcquiredConns() >= st.MaxConns(), err
	}
	defer conn.Release()
	return false, conn.Ping(ctx)
}
