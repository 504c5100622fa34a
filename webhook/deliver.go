package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// Body is what the app receives for one event: the same bytes on every
// attempt, so a receiver may hash them to drop duplicates too.
type Body struct {
	ID        string                 `json:"id"`
	Type      vault.AccountEventKind `json:"type"`
	CreatedAt time.Time              `json:"created_at"`
	UserID    string                 `json:"user_id"`
	Platform  string                 `json:"platform"`
	AccountID string                 `json:"account_id"`
	Data      json.RawMessage        `json:"data"`
}

// BodyOf is e's delivery body.
func BodyOf(e vault.OutboxEntry) []byte {
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage(`{}`)
	}
	b, _ := json.Marshal(Body{ID: e.EventID, Type: e.Kind, CreatedAt: e.CreatedAt.UTC(), UserID: e.UserID,
		Platform: e.Platform, AccountID: e.AccountID, Data: data})
	return b
}

// Outcome is what became of one delivery attempt.
type Outcome string

// The outcomes.
const (
	// Delivered: the app answered 2xx.
	Delivered Outcome = "delivered"
	// Retrying: it did not, and the event will be sent again.
	Retrying Outcome = "retry"
	// GaveUp: it did not, for longer than RetryFor: kept as failed.
	GaveUp Outcome = "failed"
)

// Outcomes are every outcome, for series that start at zero.
var Outcomes = []Outcome{Delivered, Retrying, GaveUp}

// The Deliverer's defaults.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultRetryFor   = 24 * time.Hour
	DefaultFirstRetry = 5 * time.Second
	DefaultMaxRetry   = time.Minute
	DefaultBatch      = 16
)

// Deliverer sends the outbox's due events to the app's webhook. Any
// number of replicas may run one against the same outbox: each claims
// its events (vault.Outbox.Claim), so an event goes out from one replica
// at a time, and an account's events one after another, in order.
type Deliverer struct {
	Outbox *vault.Outbox
	DB     vault.DB
	// URL receives the POSTs.
	URL string
	// Secrets sign each delivery; the first is the current one, the
	// others are still accepted by receivers during a rotation (each
	// adds its own v1= signature).
	Secrets []secret.Value
	// Client sends them; nil means one with Timeout and no redirects
	// followed (a 3xx is a failed delivery: the app's endpoint moved,
	// and the body must not go wherever a redirect points).
	Client *http.Client
	// Timeout bounds one attempt. Default DefaultTimeout.
	Timeout time.Duration
	// RetryFor is how long after an event was written it is still
	// retried; after that it is kept as failed. Default DefaultRetryFor.
	RetryFor time.Duration
	// FirstRetry is the wait after a first failure, doubled after each
	// next one up to MaxRetry (with ±20 % jitter, so replicas and
	// accounts do not retry in step). Defaults 5s and 1m: an app that
	// comes back hears within about a minute, and the first event it
	// takes wakes every other one waiting.
	FirstRetry, MaxRetry time.Duration
	// Batch is how many events one round claims. Default DefaultBatch.
	Batch int
	// Name identifies this replica in the outbox's leases.
	Name string
	// Observe, when set, hears of every attempt.
	Observe func(kind vault.AccountEventKind, outcome Outcome, took time.Duration)
	// Now is the clock; default time.Now.
	Now func() time.Time

	once sync.Once
	// failed is set when an attempt of this deliverer failed as an app
	// that is down does (vault.AppDown), and cleared by the next
	// delivery, which wakes the events waiting for that reason.
	failed atomic.Bool
}

func (d *Deliverer) defaults() {
	d.once.Do(func() {
		if d.Timeout <= 0 {
			d.Timeout = DefaultTimeout
		}
		if d.RetryFor <= 0 {
			d.RetryFor = DefaultRetryFor
		}
		if d.FirstRetry <= 0 {
			d.FirstRetry = DefaultFirstRetry
		}
		if d.MaxRetry <= 0 {
			d.MaxRetry = DefaultMaxRetry
		}
		if d.MaxRetry < d.FirstRetry {
			d.MaxRetry = d.FirstRetry
		}
		if d.Batch <= 0 {
			d.Batch = DefaultBatch
		}
		if d.Now == nil {
			d.Now = time.Now
		}
		if d.Client == nil {
			d.Client = &http.Client{
				Transport:     &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: d.Timeout}).DialContext, MaxIdleConnsPerHost: d.Batch},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
		}
	})
}

// lease is how long a claimed event is this replica's: well past one
// attempt's timeout, so that a slow answer is never delivered twice by
// a second replica, and short enough that a replica that died hands
// its events on soon.
func (d *Deliverer) lease() time.Duration { return d.Timeout + 30*time.Second }

// DeliverDue claims the due events and delivers them, each account's
// one at a time and accounts side by side; it returns how many it
// attempted. A database error stops the round (the leases hand what it
// claimed to the next).
func (d *Deliverer) DeliverDue(ctx context.Context) (int, error) {
	d.defaults()
	entries, err := d.Outbox.Claim(ctx, d.DB, d.Name, d.Batch, d.lease())
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(entries))
	for i, e := range entries {
		wg.Go(func() { errs[i] = d.deliverOne(ctx, e) })
	}
	wg.Wait()
	return len(entries), errors.Join(errs...)
}

// deliverOne sends e once and records what came of it.
func (d *Deliverer) deliverOne(ctx context.Context, e vault.OutboxEntry) error {
	start := d.Now()
	why := d.send(ctx, e)
	took := d.Now().Sub(start)
	// What came of it is recorded even if ctx ended meanwhile (a stop):
	// the app may have the event, and the row must say so.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if why != "" && ctx.Err() != nil {
		// Cut short by a stop, not failed by the app: handed back
		// untried, with no backoff, and never given up for it.
		return d.Outbox.Release(rctx, d.DB, e, d.Name)
	}
	outcome := Delivered
	var err error
	switch {
	case why == "":
		err = d.Outbox.Delivered(rctx, d.DB, e, d.Name)
		if err == nil && d.failed.Swap(false) {
			// The app is back: what failed while it was down goes now,
			// not after the rest of each backoff.
			_, err = d.Outbox.Wake(rctx, d.DB)
		}
	default:
		if vault.AppDown(why) {
			d.failed.Store(true)
		}
		var gaveUp bool
		gaveUp, err = d.Outbox.Fail(rctx, d.DB, e, d.Name, why, d.delay(e.Attempts), d.RetryFor)
		outcome = Retrying
		if gaveUp {
			outcome = GaveUp
		}
	}
	if d.Observe != nil {
		d.Observe(e.Kind, outcome, took)
	}
	return err
}

// delay is the wait after the attempts-th failure.
func (d *Deliverer) delay(attempts int) time.Duration {
	wait := d.FirstRetry
	for i := 1; i < attempts && wait < d.MaxRetry; i++ {
		wait *= 2
	}
	wait = min(wait, d.MaxRetry)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(wait) * jitter)
}

// send POSTs e and returns "" when the app took it, else why not: a
// status, a timeout, a refused connection. Never the app's answer body,
// nor the URL (whose query may hold a key of the app's).
func (d *Deliverer) send(ctx context.Context, e vault.OutboxEntry) string {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	body := BodyOf(e)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return "bad webhook url"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "credgate-webhook/1")
	secrets := make([][]byte, len(d.Secrets))
	for i, s := range d.Secrets {
		secrets[i] = []byte(s.Reveal())
	}
	SignRequest(req, e.EventID, body, d.Now(), secrets...)
	resp, err := d.Client.Do(req)
	if err != nil {
		return transportError(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Sprintf("status %d", resp.StatusCode)
	}
	return ""
}

// transportError names a failed request without its URL.
func transportError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled (credgate stopping)"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return "connection failed: " + op.Op + ": " + op.Err.Error()
	}
	return "request failed"
}
