package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/webhook"
)

// receiver is the app's webhook endpoint: it verifies each delivery and
// records what it accepted, in arrival order.
type receiver struct {
	t *testing.T
	// answer, when set, decides the status of each delivery (200 if
	// it returns 0).
	answer atomic.Pointer[func(webhook.Body) int]

	mu       sync.Mutex
	accepted []webhook.Body
	bad      int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify(r.Header, body, signingKey, time.Now(), 0); err != nil {
		rc.mu.Lock()
		rc.bad++
		rc.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var b webhook.Body
	if err := json.Unmarshal(body, &b); err != nil || b.ID != r.Header.Get(webhook.HeaderID) {
		rc.t.Errorf("a delivery's body %s (id header %q): %v", body, r.Header.Get(webhook.HeaderID), err)
	}
	if f := rc.answer.Load(); f != nil {
		if status := (*f)(b); status != 0 {
			w.WriteHeader(status)
			return
		}
	}
	rc.mu.Lock()
	rc.accepted = append(rc.accepted, b)
	rc.mu.Unlock()
}

func (rc *receiver) got() []webhook.Body {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.accepted)
}

func newReceiver(t *testing.T) (*receiver, string) {
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv.URL + "/hooks/credgate"
}

func deliverer(pool *pgxpool.Pool, url, name string) *webhook.Deliverer {
	return &webhook.Deliverer{Outbox: vault.NewOutbox(), DB: pool, URL: url, Name: name,
		Secrets: []secret.Value{secret.New(string(signingKey))}, Timeout: 2 * time.Second,
		FirstRetry: 20 * time.Millisecond, MaxRetry: 100 * time.Millisecond, Batch: 8}
}

// announce writes n events for each of accounts, in order per account
// (kinds cycle through the six), interleaved across accounts.
func announce(t *testing.T, pool *pgxpool.Pool, accounts, n int) map[string][]string {
	t.Helper()
	order := map[string][]string{}
	outbox := vault.NewOutbox()
	for i := range n {
		for a := range accounts {
			account := fmt.Sprintf("00000000-0000-4000-8000-%012d", a)
			kind := vault.AccountEventKinds[i%len(vault.AccountEventKinds)]
			err := outbox.Append(context.Background(), pool, vault.AccountEvent{Kind: kind, AccountID: account,
				UserID: fmt.Sprintf("00000000-0000-4000-9000-%012d", a), Platform: "twitter", Data: map[string]any{"seq": i}})
			if err != nil {
				t.Fatal(err)
			}
			order[account] = append(order[account], fmt.Sprintf("%s#%d", kind, i))
		}
	}
	return order
}

// runUntil runs the deliverers side by side until done or the deadline.
func runUntil(t *testing.T, d time.Duration, done func() bool, ds ...*webhook.Deliverer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for _, dl := range ds {
		wg.Go(func() {
			for ctx.Err() == nil && !done() {
				if n, err := dl.DeliverDue(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("%s: %v", dl.Name, err)
					return
				} else if n == 0 {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	if !done() {
		t.Fatalf("not done within %v", d)
	}
}

// seq is how an accepted body names its event, as announce does.
func seq(b webhook.Body) string {
	var data struct{ Seq int }
	json.Unmarshal(b.Data, &data)
	return fmt.Sprintf("%s#%d", b.Type, data.Seq)
}

// With the app answering, two replicas deliver every event exactly once
// (the leases keep them off each other's), each account's in order.
func TestTwoReplicasDeliverEachEventOnceInOrder(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.Database(t))
	rc, url := newReceiver(t)
	want := announce(t, pool, 20, 12)
	runUntil(t, 60*time.Second, func() bool { return len(rc.got()) >= 240 },
		deliverer(pool, url, "replica-a"), deliverer(pool, url, "replica-b"))
	got := map[string][]string{}
	ids := map[string]int{}
	for _, b := range rc.got() {
		got[b.AccountID] = append(got[b.AccountID], seq(b))
		ids[b.ID]++
	}
	for account, events := range want {
		if !slices.Equal(got[account], events) {
			t.Errorf("account %s received %v, want %v", account, got[account], events)
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s delivered %d times with the app answering every time", id, n)
		}
	}
	if rc.bad != 0 {
		t.Errorf("%d deliveries with a bad signature", rc.bad)
	}
	var left int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM credgate_webhook_outbox WHERE status <> 'delivered'`).Scan(&left)
	if left != 0 {
		t.Errorf("%d events not marked delivered", left)
	}
}

// The app down for a while (refusing, then failing with 503, then
// timing out) and back: every event arrives once or more, and each
// account's first arrivals are in order, whichever replica sent them.
func TestEventsSurviveTheAppBeingDown(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.Database(t))
	rc, url := newReceiver(t)
	var down atomic.Bool
	down.Store(true)
	slow := func(b webhook.Body) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	rc.answer.Store(&slow)
	want := announce(t, pool, 6, 6)
	a, b := deliverer(pool, url, "replica-a"), deliverer(pool, url, "replica-b")
	// Down: every attempt fails and is retried; none is given up.
	runUntil(t, 30*time.Second, func() bool {
		var retried int
		pool.QueryRow(context.Background(), `SELECT count(DISTINCT account_id) FROM credgate_webhook_outbox WHERE attempts >= 3`).Scan(&retried)
		return retried == 6
	}, a, b)
	st, err := vault.NewOutbox().Stats(context.Background(), pool)
	if err != nil || st.Pending != 36 || st.Failing == 0 || st.LastError != "status 503" || st.OldestPending.IsZero() {
		t.Fatalf("the outbox while the app is down: %+v %v", st, err)
	}
	if n := len(rc.got()); n != 0 {
		t.Fatalf("%d accepted while down", n)
	}
	down.Store(false)
	runUntil(t, 60*time.Second, func() bool {
		s, _ := vault.NewOutbox().Stats(context.Background(), pool)
		return s.Pending == 0
	}, a, b)
	first := map[string][]string{}
	seen := map[string]bool{}
	for _, body := range rc.got() {
		if !seen[body.ID] {
			seen[body.ID] = true
			first[body.AccountID] = append(first[body.AccountID], seq(body))
		}
	}
	for account, events := range want {
		if !slices.Equal(first[account], events) {
			t.Errorf("account %s received %v, want %v", account, first[account], events)
		}
	}
}

// An event the app refuses for longer than RetryFor is kept as failed,
// with why, and the account's next events go on.
func TestAnUndeliverableEventIsKeptAsFailed(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.Database(t))
	rc, url := newReceiver(t)
	refuse := func(b webhook.Body) int {
		if seq(b) == "account.connected#0" {
			return http.StatusInternalServerError
		}
		return 0
	}
	rc.answer.Store(&refuse)
	announce(t, pool, 1, 3)
	d := deliverer(pool, url, "replica-a")
	d.RetryFor = 300 * time.Millisecond
	runUntil(t, 30*time.Second, func() bool { return len(rc.got()) == 2 }, d)
	var status, lastError string
	var attempts int
	pool.QueryRow(context.Background(), `SELECT status, last_error, attempts FROM credgate_webhook_outbox ORDER BY id LIMIT 1`).
		Scan(&status, &lastError, &attempts)
	if status != "failed" || lastError != "status 500" || attempts < 2 {
		t.Errorf("the refused event: %s %q after %d attempts", status, lastError, attempts)
	}
	if got := []string{seq(rc.got()[0]), seq(rc.got()[1])}; !slices.Equal(got, []string{"account.disconnected#1", "account.expiring#2"}) {
		t.Errorf("after the failed one: %v", got)
	}
	st, _ := vault.NewOutbox().Stats(context.Background(), pool)
	if st.Failed != 1 || st.Pending != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// A redirect is a failed delivery: the body does not follow it.
func TestARedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.Database(t))
	rc, url := newReceiver(t)
	var followed atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { followed.Add(1) }))
	defer elsewhere.Close()
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	announce(t, pool, 1, 1)
	d := deliverer(pool, redirect.URL, "replica-a")
	if _, err := d.DeliverDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	var lastError string
	pool.QueryRow(context.Background(), `SELECT last_error FROM credgate_webhook_outbox`).Scan(&lastError)
	if followed.Load() != 0 || lastError != "status 307" || len(rc.got()) != 0 {
		t.Errorf("followed %d, last error %q", followed.Load(), lastError)
	}
	_ = url
}

// Events that failed while the app was down do not wait out the rest of
// their backoff once it is back: the first event it takes wakes them.
func TestTheAppBackWakesTheWaitingEvents(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.Database(t))
	rc, url := newReceiver(t)
	var down atomic.Bool
	down.Store(true)
	refuse := func(webhook.Body) int {
		if down.Load() {
			return http.StatusBadGateway
		}
		return 0
	}
	rc.answer.Store(&refuse)
	announce(t, pool, 5, 1)
	d := deliverer(pool, url, "replica-a")
	d.FirstRetry, d.MaxRetry = time.Hour, time.Hour
	if n, err := d.DeliverDue(context.Background()); err != nil || n != 5 {
		t.Fatalf("the first round: %d %v", n, err)
	}
	down.Store(false)
	// A new account's event is due at once; the five wait an hour.
	if err := vault.NewOutbox().Append(context.Background(), pool, vault.AccountEvent{Kind: vault.EventConnected,
		AccountID: "00000000-0000-4000-8000-000000000099", UserID: "00000000-0000-4000-9000-000000000099", Platform: "linkedin"}); err != nil {
		t.Fatal(err)
	}
	runUntil(t, 20*time.Second, func() bool { return len(rc.got()) == 6 }, d)
}

// Through PgBouncer in transaction mode (Supabase's pooler), the outbox
// works as it does on a direct connection: events written with their
// change, claimed by two replicas, delivered, woken after a failure.
func TestDeliveryThroughATransactionPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	through := pgtest.Bouncer(t, pgtest.Database(t))
	pool, err := vault.OpenPool(ctx, through)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rc, url := newReceiver(t)
	var calls atomic.Int32
	failFirst := func(webhook.Body) int {
		if calls.Add(1) <= 3 {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	rc.answer.Store(&failFirst)
	want := announce(t, pool, 8, 4)
	runUntil(t, 60*time.Second, func() bool {
		s, _ := vault.NewOutbox().Stats(ctx, pool)
		return s.Pending == 0
	}, deliverer(pool, url, "replica-a"), deliverer(pool, url, "replica-b"))
	got := map[string][]string{}
	for _, b := range rc.got() {
		got[b.AccountID] = append(got[b.AccountID], seq(b))
	}
	for account, events := range want {
		if !slices.Equal(got[account], events) {
			t.Errorf("account %s received %v, want %v", account, got[account], events)
		}
	}
	if _, err := vault.NewOutbox().Prune(ctx, pool, time.Now().Add(time.Hour), time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, err := vault.NewOutbox().Stats(ctx, pool); err != nil || st.Pending+st.Failed != 0 {
		t.Errorf("after the prune: %+v %v", st, err)
	}
}

// Only events that failed as a down app fails are woken when it is back:
// an event the app refuses on its own (a 400) keeps its backoff, rather
// than being sent again on every poll.
func TestARefusedEventKeepsItsBackoff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.Database(t))
	rc, url := newReceiver(t)
	var down atomic.Bool
	down.Store(true)
	answer := func(b webhook.Body) int {
		switch {
		case b.Platform == "linkedin":
			return http.StatusBadRequest
		case down.Load():
			return http.StatusServiceUnavailable
		}
		return 0
	}
	rc.answer.Store(&answer)
	outbox := vault.NewOutbox()
	for i, platform := range []string{"linkedin", "twitter"} {
		if err := outbox.Append(ctx, pool, vault.AccountEvent{Kind: vault.EventConnected, Platform: platform,
			AccountID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), UserID: fmt.Sprintf("00000000-0000-4000-9000-%012d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	d := deliverer(pool, url, "replica-a")
	d.FirstRetry, d.MaxRetry = time.Hour, time.Hour
	if n, err := d.DeliverDue(ctx); err != nil || n != 2 {
		t.Fatalf("the first round: %d %v", n, err)
	}
	down.Store(false)
	if err := outbox.Append(ctx, pool, vault.AccountEvent{Kind: vault.EventConnected, Platform: "facebook",
		AccountID: "00000000-0000-4000-8000-000000000099", UserID: "00000000-0000-4000-9000-000000000099"}); err != nil {
		t.Fatal(err)
	}
	runUntil(t, 20*time.Second, func() bool { return len(rc.got()) == 2 }, d)
	var attempts int
	var waiting bool
	pool.QueryRow(ctx, `SELECT attempts, next_attempt_at > now() + interval '30 minutes' FROM credgate_webhook_outbox WHERE platform = 'linkedin'`).
		Scan(&attempts, &waiting)
	if attempts != 1 || !waiting {
		t.Errorf("the refused event: %d attempts, still waiting out its backoff: %v", attempts, waiting)
	}
}

// A stop that cuts an attempt short hands the event back untried: not
// counted, no backoff, not a failure in the metrics.
func TestAStopHandsTheEventBackUntried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.Database(t))
	rc, url := newReceiver(t)
	slow := func(webhook.Body) int { time.Sleep(2 * time.Second); return 0 }
	rc.answer.Store(&slow)
	announce(t, pool, 1, 1)
	d := deliverer(pool, url, "replica-a")
	var observed atomic.Int32
	d.Observe = func(vault.AccountEventKind, webhook.Outcome, time.Duration) { observed.Add(1) }
	stopping, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop()
	if _, err := d.DeliverDue(stopping); err != nil {
		t.Fatal(err)
	}
	var attempts int
	var locked, due bool
	var lastError *string
	pool.QueryRow(ctx, `SELECT attempts, locked_by IS NOT NULL, next_attempt_at <= now(), last_error FROM credgate_webhook_outbox`).
		Scan(&attempts, &locked, &due, &lastError)
	if attempts != 0 || locked || !due || lastError != nil || observed.Load() != 0 {
		t.Errorf("after a stop mid-attempt: %d attempts, locked %v, due %v, last error %v, %d outcomes observed", attempts, locked, due, lastError, observed.Load())
	}
}
