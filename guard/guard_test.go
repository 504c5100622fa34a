package guard_test

import (
	"context"
	"errors"
	neturl "net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/internal/pgtest"
)

func TestTrips(t *testing.T) {
	t.Parallel()
	c := guard.DefaultConfig()
	cases := []struct {
		name        string
		newArm, leg guard.Rate
		want        bool
	}{
		{"below the sample minimum, however bad", guard.Rate{Successes: 0, Failures: 49}, guard.Rate{}, false},
		{"at the minimum, at 95 %", guard.Rate{Successes: 95, Failures: 5}, guard.Rate{}, false},
		{"at the minimum, below 95 %", guard.Rate{Successes: 47, Failures: 3}, guard.Rate{}, true},
		{"80 %", guard.Rate{Successes: 80, Failures: 20}, guard.Rate{Successes: 100}, true},
	}
	for _, tc := range cases {
		if _, got := c.Trips(tc.newArm, tc.leg); got != tc.want {
			t.Errorf("%s: trips %v, want %v", tc.name, got, tc.want)
		}
	}
	// The gap: with min_success 0.80, 0.85 against a legacy arm at 0.99
	// trips (gap 0.14 > 0.05), against a legacy arm with too few samples
	// it does not. Zero is a setting, not "the default": min_success 0
	// leaves only the gap, max_gap 0 allows none.
	c = guard.DefaultConfig()
	c.MinSuccess = 0.80
	if reason, got := c.Trips(guard.Rate{Successes: 85, Failures: 15}, guard.Rate{Successes: 99, Failures: 1}); !got || reason == "" {
		t.Error("a 14-point gap to the legacy arm does not trip")
	}
	if _, got := c.Trips(guard.Rate{Successes: 85, Failures: 15}, guard.Rate{Successes: 10}); got {
		t.Error("a gap judged on 10 legacy samples trips")
	}
	if _, got := c.Trips(guard.Rate{Successes: 96, Failures: 4}, guard.Rate{Successes: 99, Failures: 1}); got {
		t.Error("a 3-point gap trips")
	}
	c = guard.Config{MinSuccess: 0, MaxGap: 0, MinSamples: 50, Window: time.Hour}
	if _, got := c.Trips(guard.Rate{Successes: 10, Failures: 90}, guard.Rate{}); got {
		t.Error("min_success 0 still has a floor")
	}
	if _, got := c.Trips(guard.Rate{Successes: 98, Failures: 2}, guard.Rate{Successes: 99, Failures: 1}); !got {
		t.Error("max_gap 0 allows a gap")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, change := range []func(*guard.Config){
		func(c *guard.Config) { c.MinSuccess = 1.5 }, func(c *guard.Config) { c.MaxGap = -1 },
		func(c *guard.Config) { c.MinSamples = 0 }, func(c *guard.Config) { c.Window = time.Second },
	} {
		c := guard.DefaultConfig()
		change(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := guard.DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// record counts n flows of one arm and platform.
func record(o *flags.Outcomes, arm flags.Arm, platform string, successes, failures int) {
	for range successes {
		o.Record(arm, platform, true)
	}
	for range failures {
		o.Record(arm, platform, false)
	}
}

// Two replicas share one database: their outcomes add up in one window,
// the trip is latched once, audited once, and holds in both; a resume
// clears it in both and starts a fresh window.
func TestHaltIsSharedAcrossReplicasAndResumeClearsIt(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	ctx := context.Background()
	var halts atomic.Int32
	cfg := guard.DefaultConfig()
	platforms := []string{"twitter", "linkedin"}
	oa, ob := flags.NewOutcomes(), flags.NewOutcomes()
	a := guard.New(pgtest.Pool(t, url), cfg, oa, platforms, guard.OnHalt(func(guard.Halt) { halts.Add(1) }))
	b := guard.New(pgtest.Pool(t, url), cfg, ob, platforms, guard.OnHalt(func(guard.Halt) { halts.Add(1) }))
	tick := func() {
		t.Helper()
		for _, g := range []*guard.Guard{a, b} {
			if err := g.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}

	// 40 outcomes at 80 %, split over the replicas: below the minimum.
	record(oa, flags.ArmNew, "twitter", 16, 4)
	record(ob, flags.ArmNew, "twitter", 16, 4)
	record(oa, flags.ArmLegacy, "twitter", 100, 0)
	record(ob, flags.ArmNew, "linkedin", 60, 0)
	tick()
	if a.Halted("twitter") || b.Halted("twitter") {
		t.Fatal("halted below the sample minimum")
	}
	// 10 more on replica b: 50 in the shared window, at 80 %.
	record(ob, flags.ArmNew, "twitter", 8, 2)
	tick()
	tick() // a sees b's latch
	if !a.Halted("twitter") || !b.Halted("twitter") {
		t.Fatalf("not halted in both replicas: a %v, b %v", a.Halted("twitter"), b.Halted("twitter"))
	}
	if a.Halted("linkedin") {
		t.Fatal("a healthy platform halted")
	}
	if n := halts.Load(); n != 1 {
		t.Fatalf("%d replicas latched the halt, want 1", n)
	}
	var audited int
	var details map[string]any
	pool := pgtest.Pool(t, url)
	if err := pool.QueryRow(ctx, `SELECT count(*) OVER (), details FROM credential_audit_log WHERE action = 'rollout_halted' AND platform = 'twitter'`).
		Scan(&audited, &details); err != nil {
		t.Fatal(err)
	}
	if audited != 1 || details["new_samples"] != float64(50) || details["new_success"] != 0.8 || details["legacy_samples"] != float64(100) {
		t.Fatalf("audit: %d rows, details %v", audited, details)
	}
	var st []guard.Platform
	for _, p := range a.Platforms() {
		if p.Name == "twitter" {
			st = append(st, p)
		}
	}
	if len(st) != 1 || st[0].Halt == nil || st[0].New.Samples() != 50 || st[0].Legacy.Samples() != 100 {
		t.Fatalf("status: %+v", st)
	}

	// Resume: cleared in both after their next tick, audited, and the
	// outcomes that caused the halt do not trip it again.
	if _, err := guard.Resume(ctx, pool, "twitter", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := guard.Resume(ctx, pool, "twitter", "test"); !errors.Is(err, guard.ErrNotHalted) {
		t.Fatalf("resuming twice: %v, want ErrNotHalted", err)
	}
	tick()
	if a.Halted("twitter") || b.Halted("twitter") {
		t.Fatal("still halted after a resume")
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM credential_audit_log WHERE action = 'rollout_resumed' AND platform = 'twitter' AND details->>'by' = 'test'`).
		Scan(&audited); err != nil || audited != 1 {
		t.Fatalf("resume audit rows: %d, %v", audited, err)
	}
	if n := halts.Load(); n != 1 {
		t.Fatalf("re-tripped on the old outcomes (%d halts)", n)
	}
	// Outcomes after the resume count, from the first one: 50 more at
	// 80 % trip it again.
	record(oa, flags.ArmNew, "twitter", 40, 10)
	tick()
	if !a.Halted("twitter") {
		for _, p := range a.Platforms() {
			t.Logf("%+v", p)
		}
		t.Fatal("50 failing flows after a resume did not halt it again")
	}
}

// A replica that read the window before an operator resumed cannot latch
// a halt on it afterwards; one that read it after the resume can.
func TestALatchDecidedBeforeAResumeDoesNotStick(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	ctx := context.Background()
	pool := pgtest.Pool(t, url)
	o := flags.NewOutcomes()
	g := guard.New(pool, guard.DefaultConfig(), o, []string{"twitter"})
	record(o, flags.ArmNew, "twitter", 40, 10)
	// Replica A reads the window: not halted, never resumed, and it trips.
	before, err := guard.Status(ctx, pool, time.Hour, []string{"twitter"})
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile replica B latches and an operator resumes.
	if err := g.Tick(ctx); err != nil || !g.Halted("twitter") {
		t.Fatalf("B's halt: %v", err)
	}
	if _, err := guard.Resume(ctx, pool, "twitter", "test"); err != nil {
		t.Fatal(err)
	}
	// A's latch, decided on the window it read before the resume.
	latched, err := g.Latch(ctx, &guard.Halt{Platform: "twitter", Reason: "stale"}, before[0].ResumedAt)
	if err != nil || latched {
		t.Fatalf("a latch decided before the resume: latched %v, %v", latched, err)
	}
	if err := g.Tick(ctx); err != nil || g.Halted("twitter") {
		t.Fatalf("halted after the resume on the old outcomes: %v", err)
	}
	after, err := guard.Status(ctx, pool, time.Hour, []string{"twitter"})
	if err != nil || after[0].ResumedAt == nil || after[0].New.Samples() != 0 {
		t.Fatalf("the window after the resume: %+v %v", after, err)
	}
	latched, err = g.Latch(ctx, &guard.Halt{Platform: "twitter", Reason: "fresh"}, after[0].ResumedAt)
	if err != nil || !latched {
		t.Fatalf("a latch decided after the resume: latched %v, %v", latched, err)
	}
}

// Until a tick has read the latches, every platform counts as halted.
func TestHaltedUntilLoaded(t *testing.T) {
	t.Parallel()
	g := guard.New(nil, guard.DefaultConfig(), flags.NewOutcomes(), []string{"twitter"})
	if g.Loaded() || !g.Halted("twitter") {
		t.Fatal("a guard that never read the latches lets starts through")
	}
}

// A replica that cannot reach the database keeps the halts it last saw,
// and catches up with the outcomes it counted meanwhile.
func TestTickWithoutDatabaseKeepsTheLastHalts(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := pgtest.NewProxy(t, u.Host)
	proxy.Up(t)
	u.Host = proxy.Addr
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	o := flags.NewOutcomes()
	cfg := guard.DefaultConfig()
	cfg.MinSamples = 10
	g := guard.New(pgtest.Pool(t, u.String()), cfg, o, []string{"twitter"})
	record(o, flags.ArmNew, "twitter", 0, 10)
	if err := g.Tick(context.Background()); err != nil || !g.Halted("twitter") {
		t.Fatalf("tick: %v, halted %v", err, g.Halted("twitter"))
	}
	proxy.Down()
	record(o, flags.ArmNew, "twitter", 5, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.Tick(ctx); err == nil {
		t.Fatal("a tick without the database succeeded")
	}
	if !g.Halted("twitter") {
		t.Fatal("the halt was forgotten while the database was away")
	}
	proxy.Up(t)
	if err := g.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := g.Platforms(); len(p) != 1 || p[0].New.Samples() != 15 {
		t.Fatalf("after the database came back: %+v", p)
	}
}
