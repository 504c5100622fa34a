package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

// The back end's reads of one user in a burst go to the database once:
// for worker.RecentFor the token read is served again, unless this
// instance changed the account meanwhile or the token would no longer be
// valid for as long as the caller asks.
func TestReadRecentServesABurstFromOneRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(11)
	e.connect("twitter", u)
	ctx := context.Background()
	r := e.refresher(pgtest.Pool(t, e.url), nil)
	first, err := r.ReadRecent(ctx, u, "twitter", 5*time.Minute, "token_api")
	if err != nil {
		t.Fatal(err)
	}
	// Gone from the database behind this instance's back (another
	// replica's disconnect): the burst is still served the token read.
	if _, err := e.pool.Exec(ctx, `UPDATE social_accounts SET credentials_encrypted = NULL WHERE user_id = $1`, u); err != nil {
		t.Fatal(err)
	}
	again, err := r.ReadRecent(ctx, u, "twitter", 5*time.Minute, "token_api")
	if err != nil || again.Credentials.AccessToken.Reveal() != first.Credentials.AccessToken.Reveal() {
		t.Fatalf("a read within %v: %v, same token %v", worker.RecentFor, err, err == nil && again.Credentials.AccessToken.Reveal() == first.Credentials.AccessToken.Reveal())
	}
	// Past RecentFor the database is read again.
	e.clock.Advance(worker.RecentFor)
	if _, err := r.ReadRecent(ctx, u, "twitter", 5*time.Minute, "token_api"); !errors.Is(err, vault.ErrNotConnected) {
		t.Fatalf("a read after %v: %v, want not connected", worker.RecentFor, err)
	}

	// A change this instance makes is seen at once.
	v := userID(12)
	e.connect("twitter", v)
	if _, err := r.ReadRecent(ctx, v, "twitter", 5*time.Minute, "token_api"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE social_accounts SET credentials_encrypted = NULL WHERE user_id = $1`, v); err != nil {
		t.Fatal(err)
	}
	r.Forget(v, "twitter")
	if _, err := r.ReadRecent(ctx, v, "twitter", 5*time.Minute, "token_api"); !errors.Is(err, vault.ErrNotConnected) {
		t.Fatalf("a read after Forget: %v, want not connected", err)
	}

	// A kept token is not served to a caller who needs it for longer
	// than it has left: that read goes to the database.
	w := userID(13)
	e.connect("twitter", w)
	if _, err := r.ReadRecent(ctx, w, "twitter", time.Minute, "token_api"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE social_accounts SET credentials_encrypted = NULL WHERE user_id = $1`, w); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadRecent(ctx, w, "twitter", time.Minute, "token_api"); err != nil {
		t.Fatalf("a read that the kept token satisfies: %v", err)
	}
	if _, err := r.ReadRecent(ctx, w, "twitter", 121*time.Minute, "token_api"); !errors.Is(err, vault.ErrNotConnected) {
		t.Fatalf("a read that needs the token for longer than it has left: %v, want the database's not connected", err)
	}

	// A renewal by this instance replaces what was kept.
	x := userID(14)
	e.connect("twitter", x)
	e.clock.Advance(110 * time.Minute) // ten minutes left
	kept, err := r.ReadRecent(ctx, x, "twitter", 5*time.Minute, "token_api")
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := r.EnsureFresh(ctx, x, "twitter", 15*time.Minute, "token_api")
	if err != nil || !renewed.Refreshed || renewed.Credentials.AccessToken.Reveal() == kept.Credentials.AccessToken.Reveal() {
		t.Fatalf("the renewal: %v, refreshed %v", err, renewed.Refreshed)
	}
	next, err := r.ReadRecent(ctx, x, "twitter", 5*time.Minute, "token_api")
	if err != nil || next.Credentials.AccessToken.Reveal() != renewed.Credentials.AccessToken.Reveal() {
		t.Fatalf("the read after the renewal: %v, the renewed token %v", err,
			err == nil && next.Credentials.AccessToken.Reveal() == renewed.Credentials.AccessToken.Reveal())
	}
}

// A Forget while a read is under way wins: the read may have read the
// account before the change Forget announces, and must not keep what it
// read. Here the change and the Forget land right after the read's
// SELECT (a query tracer on its pool), before ReadRecent keeps its
// answer; the next read must go to the database. Before, the read kept
// the old token over the Forget, and served it for RecentFor.
func TestAForgetDuringAReadWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	u := userID(21)
	e.connect("twitter", u)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(e.url)
	if err != nil {
		t.Fatal(err)
	}
	var r *worker.Refresher
	changeDuring := &afterQuery{fn: func() {
		if _, err := e.pool.Exec(ctx, `UPDATE social_accounts SET credentials_encrypted = NULL WHERE user_id = $1`, u); err != nil {
			t.Error(err)
		}
		r.Forget(u, "twitter")
	}}
	cfg.ConnConfig.Tracer = changeDuring
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	r = e.refresher(pool, nil)
	changeDuring.armed.Store(true)
	if _, err := r.ReadRecent(ctx, u, "twitter", 5*time.Minute, "token_api"); err != nil {
		t.Fatalf("the read that began before the change: %v", err)
	}
	if changeDuring.armed.Load() {
		t.Fatal("the change did not happen during the read")
	}
	if _, err := r.ReadRecent(ctx, u, "twitter", 5*time.Minute, "token_api"); !errors.Is(err, vault.ErrNotConnected) {
		t.Fatalf("the read after the Forget: %v, want the database's not connected", err)
	}
}

// afterQuery runs fn once, when armed, right after the first query that
// reads social_accounts ends.
type afterQuery struct {
	armed atomic.Bool
	fn    func()
}

type afterQueryKey struct{}

func (a *afterQuery) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "social_accounts") && a.armed.CompareAndSwap(true, false) {
		return context.WithValue(ctx, afterQueryKey{}, true)
	}
	return ctx
}

func (a *afterQuery) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(afterQueryKey{}) != nil {
		a.fn()
	}
}
