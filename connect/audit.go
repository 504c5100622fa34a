package connect

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/puddle/v2"
	"go.uber.org/zap"

	"github.com/credgate/credgate/internal/dberr"
	"github.com/credgate/credgate/internal/waitgroup"
	"github.com/credgate/credgate/vault"
)

// DBTimeout is the budget of one database call made for a request.
const DBTimeout = 5 * time.Second

// auditRetry bounds how long RecordEventually keeps trying: a failover's
// length, as for a renewal's answer (worker.Refresher.StoreRetry).
const auditRetry = 5 * time.Minute

// Auditor writes the audit rows of requests whose own context may be
// spent or gone by the time the row is written: an exchange that used up
// the request's budget, a browser that hung up after the platform
// answered. The one place that gives an audit row a budget of its own and
// logs a row it could not write.
type Auditor struct {
	db     vault.DB
	logger *zap.Logger
	// pending are rows RecordEventually is still retrying, shared by
	// every view of the auditor (WithLogger).
	pending *sync.WaitGroup
}

// NewAuditor writes to db and logs to logger (nil: nowhere).
func NewAuditor(db vault.DB, logger *zap.Logger) *Auditor {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Auditor{db: db, logger: logger, pending: new(sync.WaitGroup)}
}

// WithLogger is the same auditor logging to logger: the handler that
// served the request names its lines, as Caddy's log filters expect.
func (a *Auditor) WithLogger(logger *zap.Logger) *Auditor {
	c := *a
	c.logger = logger
	return &c
}

// Record writes e on a fresh DBTimeout budget that ctx's cancellation
// does not end (ctx still carries the trace), and logs a failure: a
// request's answer never waits on or fails for its audit row.
func (a *Auditor) Record(ctx context.Context, e vault.Event) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DBTimeout)
	defer cancel()
	if err := vault.AppendAudit(actx, a.db, e); err != nil {
		a.logger.Error("writing audit row", zap.String("user_id", e.UserID), zap.String("platform", e.Platform),
			zap.String("action", string(e.Action)), errField(err))
	}
}

// RecordEventually writes e now or, while the database is down or does
// not answer, in the background with backoff for up to five minutes: for
// the rows whose loss the audit log exists to prevent (a grant withdrawn
// because it could not be stored). Every log line names the user and
// platform, so that a row given up on can be written by hand.
func (a *Auditor) RecordEventually(e vault.Event) {
	fields := []zap.Field{zap.String("user_id", e.UserID), zap.String("platform", e.Platform), zap.String("action", string(e.Action)),
		zap.String("error_code", e.ErrorCode), zap.Any("details", e.Details)}
	try := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), DBTimeout)
		defer cancel()
		return vault.AppendAudit(ctx, a.db, e)
	}
	err := try()
	if err == nil {
		return
	}
	log := a.logger
	if !dberr.Retryable(err) || errors.Is(err, puddle.ErrClosedPool) {
		log.Error("writing audit row", append(fields, errField(err))...)
		return
	}
	log.Warn("writing audit row: the database does not answer; retrying in the background", append(fields, errField(err))...)
	a.pending.Go(func() {
		deadline := time.Now().Add(auditRetry)
		for wait := time.Second; ; wait = min(wait*2, 15*time.Second) {
			time.Sleep(wait)
			err := try()
			switch {
			case err == nil:
				log.Info("audit row written after the database came back", fields...)
				return
			case !dberr.Retryable(err) || errors.Is(err, puddle.ErrClosedPool) || time.Now().Add(wait).After(deadline):
				log.Error("audit row not written: giving up", append(fields, errField(err))...)
				return
			}
		}
	})
}

// Wait waits up to d for the rows RecordEventually is retrying, and
// reports whether they all finished: called before the pool closes.
func (a *Auditor) Wait(d time.Duration) bool { return waitgroup.Within(a.pending, d) }

// errField logs an error's text under "error", as every credgate log line
// does (zap.Error would add a verbose stack for some error types).
func errField(err error) zap.Field { return zap.String("error", err.Error()) }
