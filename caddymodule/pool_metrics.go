package caddymodule

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolStats reports the pgx pool's own statistics (pgxpool.Pool.Stat) at
// scrape time: how full the pool is, and how long requests wait for a
// connection. Reading them costs no round trip. The counters are the
// pool's since it was opened; the pool outlives config reloads (app.go),
// so they keep counting across them, and a new pool (another
// database_url) starts them again, which rate() takes as a reset.
type poolStats struct{ pool *pgxpool.Pool }

var (
	poolAcquiredDesc = prometheus.NewDesc("credgate_db_pool_acquired_conns",
		"Database connections in use now.", nil, nil)
	poolIdleDesc = prometheus.NewDesc("credgate_db_pool_idle_conns",
		"Database connections open and idle now.", nil, nil)
	poolConstructingDesc = prometheus.NewDesc("credgate_db_pool_constructing_conns",
		"Database connections being opened now.", nil, nil)
	poolTotalDesc = prometheus.NewDesc("credgate_db_pool_total_conns",
		"Database connections in the pool now (acquired, idle and being opened).", nil, nil)
	poolMaxDesc = prometheus.NewDesc("credgate_db_pool_max_conns",
		"The pool's size limit (pool_max_conns, or the refresh workers plus 8).", nil, nil)
	poolAcquiresDesc = prometheus.NewDesc("credgate_db_pool_acquires_total",
		"Connections handed out by the pool.", nil, nil)
	poolAcquireSecondsDesc = prometheus.NewDesc("credgate_db_pool_acquire_seconds_total",
		"Time spent getting those connections, in total: divided by credgate_db_pool_acquires_total, the average wait.", nil, nil)
	poolEmptyAcquiresDesc = prometheus.NewDesc("credgate_db_pool_empty_acquires_total",
		"Acquires that found no idle connection and waited for one to be released or opened.", nil, nil)
	poolEmptyWaitDesc = prometheus.NewDesc("credgate_db_pool_empty_acquire_wait_seconds_total",
		"Time those acquires waited, in total.", nil, nil)
	poolCanceledDesc = prometheus.NewDesc("credgate_db_pool_canceled_acquires_total",
		"Acquires given up before a connection came (the request's deadline or the client went away).", nil, nil)
	poolNewConnsDesc = prometheus.NewDesc("credgate_db_pool_new_conns_total",
		"Database connections opened.", nil, nil)
)

func (poolStats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolAcquiredDesc, poolIdleDesc, poolConstructingDesc, poolTotalDesc, poolMaxDesc,
		poolAcquiresDesc, poolAcquireSecondsDesc, poolEmptyAcquiresDesc, poolEmptyWaitDesc, poolCanceledDesc, poolNewConnsDesc} {
		ch <- d
	}
}

func (p poolStats) Collect(ch chan<- prometheus.Metric) {
	s := p.pool.Stat()
	for _, g := range []struct {
		desc *prometheus.Desc
		v    int32
	}{{poolAcquiredDesc, s.AcquiredConns()}, {poolIdleDesc, s.IdleConns()}, {poolConstructingDesc, s.ConstructingConns()},
		{poolTotalDesc, s.TotalConns()}, {poolMaxDesc, s.MaxConns()}} {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(g.v))
	}
	for _, c := range []struct {
		desc *prometheus.Desc
		v    float64
	}{{poolAcquiresDesc, float64(s.AcquireCount())}, {poolAcquireSecondsDesc, s.AcquireDuration().Seconds()},
		{poolEmptyAcquiresDesc, float64(s.EmptyAcquireCount())}, {poolEmptyWaitDesc, s.EmptyAcquireWaitTime().Seconds()},
		{poolCanceledDesc, float64(s.CanceledAcquireCount())}, {poolNewConnsDesc, float64(s.NewConnsCount())}} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, c.v)
	}
}
