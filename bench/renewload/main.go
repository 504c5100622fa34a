// Command renewload measures background renewals against a warm floor,
// in alternating rounds of one run, for bench/renewals.sh.
//
// The renewals are done by credgate processes of their own (the script
// starts two Caddy instances with four workers each) against the sandbox
// in a third process, whose Twitter tokens live a short time
// (access_ttl). renewload never renews anything itself; it only sets the
// accounts' refresh jobs due and watches the sandbox's counters:
//
//   - floor: a warm one-row UPDATE of each account, from 8 goroutines over
//     2 pools opened once for the run (the same shape as 2 × 4 workers);
//   - burst: every job due at once (run_at = now()); the rate is the
//     accounts over the time from the platform's first renewal to its
//     last;
//   - steady: the jobs due at a spread of times over -spread; the figure is
//     how far behind the schedule the last renewal came (behind_ms).
//
// The end of a cycle is seen at the sandbox (GET /_sandbox/stats every
// 20 ms), a process of its own: nothing polls the database being
// measured. Between cycles every job is pushed an hour out, so no renewal
// runs while the floor is measured or while the tokens age past half
// their life (credgate never renews a token in its first half: the next
// cycle waits for that). After each cycle one query checks that every
// renewal was stored.
//
// Each round prints one JSON line per measure (bench/internal/loadrun's
// shape: "flows" are renewals or updates) and, at the end, the summary
// with the median ratio against the floor.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/credgate/credgate/bench/internal/loadrun"
)

func main() {
	dbURL := flag.String("database-url", "", "the database the credgate instances renew in (required)")
	sandboxURL := flag.String("sandbox", "", "the sandbox's base URL, whose counters show the renewals (required)")
	rounds := flag.Int("rounds", 3, "rounds, each a floor pass and a burst (and a steady cycle with -spread)")
	ttl := flag.Duration("ttl", 2*time.Minute, "the sandbox's Twitter access-token life (its access_ttl)")
	spread := flag.Duration("spread", 0, "also run a steady cycle each round: the jobs due evenly over this long")
	cpu := flag.String("cpu", "", "processes whose CPU to report per renewal: name=pid,… (pid may be a pid file); name=postgres sums every process named postgres")
	out := flag.String("out", "", "append the result lines to this file too")
	flag.Parse()
	if *dbURL == "" || *sandboxURL == "" {
		fmt.Fprintln(os.Stderr, "renewload: need -database-url and -sandbox")
		os.Exit(2)
	}
	meters, err := loadrun.ParseCPU(*cpu)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	b, err := newBench(ctx, *dbURL, *sandboxURL, *ttl)
	if err != nil {
		fail(err)
	}
	defer b.close()
	results := *out
	if results == "" {
		f, err := os.CreateTemp("", "renewload-*.jsonl")
		if err != nil {
			fail(err)
		}
		f.Close()
		defer os.Remove(f.Name())
		results = f.Name()
	}
	emit := func(r loadrun.Result) {
		line, _ := json.Marshal(r)
		fmt.Fprintln(os.Stderr, string(line))
		f, err := os.OpenFile(results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fail(err)
		}
		fmt.Fprintln(f, string(line))
		f.Close()
	}
	// Warm the floor's pools and the rows' pages once, unmeasured.
	if _, err := b.floor(ctx, nil); err != nil {
		fail(fmt.Errorf("warming the floor: %w", err))
	}
	for r := range *rounds {
		// Alternate which comes first, so neither always follows the
		// other's leftovers (autovacuum, checkpoints).
		steps := []func() (loadrun.Result, error){
			func() (loadrun.Result, error) { return b.floor(ctx, meters) },
			func() (loadrun.Result, error) { return b.cycle(ctx, 0, meters) },
		}
		if r%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		if *spread > 0 {
			steps = append(steps, func() (loadrun.Result, error) { return b.cycle(ctx, *spread, meters) })
		}
		for _, step := range steps {
			res, err := step()
			if err != nil {
				fail(fmt.Errorf("round %d: %w", r+1, err))
			}
			emit(res)
		}
	}
	fmt.Println()
	if err := loadrun.SummarizeFile(results, "floor", os.Stdout); err != nil {
		fail(err)
	}
}

type bench struct {
	pools   [2]*pgxpool.Pool
	sandbox string
	ttl     time.Duration
	ids     []string
	// aged is when every token will be past half its life, so that the
	// next cycle renews each one.
	aged time.Time
}

func newBench(ctx context.Context, dbURL, sandboxURL string, ttl time.Duration) (*bench, error) {
	b := &bench{sandbox: sandboxURL, ttl: ttl}
	for i := range b.pools {
		cfg, err := pgxpool.ParseConfig(dbURL)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns, cfg.MinConns = 4, 4
		if b.pools[i], err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return nil, err
		}
	}
	rows, err := b.pools[0].Query(ctx, `SELECT a.id::text FROM social_accounts a
		JOIN token_refresh_queue q ON q.social_account_id = a.id AND q.status IN ('pending', 'running')
		WHERE a.platform = 'twitter' ORDER BY a.id`)
	if err != nil {
		return nil, err
	}
	if b.ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, err
	}
	if len(b.ids) == 0 {
		return nil, errors.New("no Twitter account with a refresh job: connect some first")
	}
	// The seeding connects just happened: their tokens age from now.
	if err := b.hold(ctx); err != nil {
		return nil, err
	}
	b.aged = time.Now().Add(ttl/2 + 2*time.Second)
	return b, nil
}

func (b *bench) close() {
	for _, p := range b.pools {
		p.Close()
	}
}

// hold pushes every job an hour out: nothing renews until a cycle says.
func (b *bench) hold(ctx context.Context) error {
	_, err := b.pools[0].Exec(ctx, `UPDATE token_refresh_queue SET run_at = now() + interval '1 hour'
		WHERE status = 'pending'`)
	return err
}

// floor updates each account row once, bare, from 8 goroutines over the
// two pools: what one renewal's write costs at the least.
func (b *bench) floor(ctx context.Context, meters []loadrun.CPUMeter) (loadrun.Result, error) {
	next := make(chan string, 256)
	go func() {
		for _, id := range b.ids {
			next <- id
		}
		close(next)
	}()
	var failed error
	var mu sync.Mutex
	run := func() error {
		id, ok := <-next
		if !ok {
			return nil
		}
		pool := b.pools[int(id[len(id)-1])%2]
		if _, err := pool.Exec(ctx, `UPDATE social_accounts SET updated_at = now() WHERE id = $1`, id); err != nil {
			mu.Lock()
			failed = err
			mu.Unlock()
			return err
		}
		return nil
	}
	wal0, err := loadrun.MarkWAL(ctx, b.pools[0])
	if err != nil {
		return loadrun.Result{}, err
	}
	res := loadrun.Measure(run, 8, 0, int64(len(b.ids)), meters)
	res.Label, res.Unit = "floor", "updates"
	if err := loadrun.AddWALSince(ctx, b.pools[0], &res, wal0); err != nil {
		return loadrun.Result{}, err
	}
	return res, failed
}

// cycle sets every job due (at once, or evenly over spread), waits for
// the sandbox to have renewed every account, and checks that each
// renewal was stored.
func (b *bench) cycle(ctx context.Context, spread time.Duration, meters []loadrun.CPUMeter) (loadrun.Result, error) {
	if wait := time.Until(b.aged); wait > 0 {
		time.Sleep(wait)
	}
	before, err := b.renewed()
	if err != nil {
		return loadrun.Result{}, err
	}
	n := len(b.ids)
	cpu0 := loadrun.ReadCPU(meters)
	started := time.Now()
	if _, err := b.pools[0].Exec(ctx, `UPDATE token_refresh_queue q SET run_at = now() + s.at
		FROM (SELECT id, (row_number() OVER (ORDER BY random()) - 1) * $1::float8 / $2 * interval '1 second' AS at
		      FROM token_refresh_queue WHERE status = 'pending') s
		WHERE q.id = s.id`, spread.Seconds(), n); err != nil {
		return loadrun.Result{}, err
	}
	// From here to the last renewal: the WAL of the renewals alone, not
	// of the UPDATE that made them due or of the hold after.
	wal0, err := loadrun.MarkWAL(ctx, b.pools[0])
	if err != nil {
		return loadrun.Result{}, err
	}
	var first, last time.Time
	deadline := started.Add(spread + 10*time.Minute)
	for {
		done, err := b.renewed()
		if err != nil {
			return loadrun.Result{}, err
		}
		now := time.Now()
		if first.IsZero() && done > before {
			first = now
		}
		if done >= before+n {
			last = now
			break
		}
		if now.After(deadline) {
			return loadrun.Result{}, fmt.Errorf("%d of %d accounts renewed after %v", done-before, n, now.Sub(started).Round(time.Second))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cpu1 := loadrun.ReadCPU(meters)
	var walRes loadrun.Result
	walRes.Flows = int64(n)
	if err := loadrun.AddWALSince(ctx, b.pools[0], &walRes, wal0); err != nil {
		return loadrun.Result{}, err
	}
	b.aged = last.Add(b.ttl/2 + 2*time.Second)
	if err := b.hold(ctx); err != nil {
		return loadrun.Result{}, err
	}
	// Every renewal the platform answered is stored, each account once.
	var stored int
	if err := b.pools[0].QueryRow(ctx, `SELECT count(*) FROM social_accounts
		WHERE platform = 'twitter' AND last_refreshed_at >= $1`, started.Add(-time.Second)).Scan(&stored); err != nil {
		return loadrun.Result{}, err
	}
	if stored != n {
		var detail string
		b.pools[0].QueryRow(ctx, `SELECT string_agg(format('%s last_refreshed_at=%s job=%s run_at=%s attempts=%s err=%s', a.id, a.last_refreshed_at, q.status, q.run_at, q.attempts, q.last_error), '; ')
			FROM social_accounts a LEFT JOIN token_refresh_queue q ON q.social_account_id = a.id
			WHERE a.platform = 'twitter' AND (a.last_refreshed_at IS NULL OR a.last_refreshed_at < $1)`, started.Add(-time.Second)).Scan(&detail)
		return loadrun.Result{}, fmt.Errorf("the platform renewed %d accounts, and %d renewals are stored: %s", n, stored, detail)
	}
	res := loadrun.Result{Label: "burst", Unit: "renewals", Flows: int64(n), Concurrency: 8,
		WALKBPerFlow: walRes.WALKBPerFlow, FPIPerFlow: walRes.FPIPerFlow, Checkpoints: walRes.Checkpoints}
	took := last.Sub(first)
	if spread > 0 {
		// Keeping up, the rate is the schedule's: what tells is how far
		// behind it the last renewal came.
		res.Label, took = "steady", last.Sub(started)
		res.BehindMs = float64((last.Sub(started) - spread).Milliseconds())
	}
	res.FlowsPerSec = float64(n) / math.Max(took.Seconds(), 1e-3)
	if len(meters) > 0 {
		res.CPUms = map[string]float64{}
		for i, m := range meters {
			res.CPUms[m.Name()] = loadrun.CPUPerFlow(cpu0[i], cpu1[i], int64(n))
		}
	}
	return res, nil
}

// renewed is how many Twitter refreshes the sandbox has answered.
func (b *bench) renewed() (int, error) {
	resp, err := http.Get(b.sandbox + "/_sandbox/stats")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var stats map[string]struct {
		Refreshes int `json:"refreshes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		return 0, err
	}
	return stats["twitter"].Refreshes, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "renewload:", err)
	os.Exit(1)
}
