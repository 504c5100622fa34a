package flags_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/flagdtest"
)

// flagFile renders a flag file: the kill switch state and the new-flow
// percentage, plus optional raw replacements for special cases.
func flagFile(enabled bool, percent int) string {
	variant := "on"
	if !enabled {
		variant = "off"
	}
	return fmt.Sprintf(`{"flags":{
		"oauth-new-flow-enabled":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":%q},
		"oauth-new-flow":{"state":"ENABLED","variants":{"new":"new","legacy":"legacy"},"defaultVariant":"legacy",
			"targeting":{"fractional":[["new",%d],["legacy",%d]]}}}}`, variant, percent, 100-percent)
}

// writeAtomically is how ops are told to change the file: write a
// temporary file in the same directory, then rename it over the flag file.
func writeAtomically(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// flagdRollout starts a flagd in-process rollout on a fresh flag file.
func flagdRollout(t testing.TB, content string) (*flags.Rollout, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flags.json")
	writeAtomically(t, path, content)
	p, err := flags.FlagdFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// These tests are about the split, not the deadline: a busy CI machine
	// must not turn a decision into a timeout, nor cut InForce's sample
	// short (it did at load 20: 523 of 1,000).
	r := flags.NewRollout(p, flags.WithDecisionTimeout(10*time.Second), flags.WithInForceBudget(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.StartAndWait(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r, path
}

func userID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }

func TestRolloutIsMonotonicAndOnTarget(t *testing.T) {
	const users = 100_000
	percents := []int{25, 50, 75, 100}
	rollouts := map[int]*flags.Rollout{}
	for _, p := range percents {
		rollouts[p], _ = flagdRollout(t, flagFile(true, p))
	}
	cohorts := map[int][]bool{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range percents {
		wg.Go(func() {
			cohort := make([]bool, users)
			for i := range users {
				d := rollouts[p].Decide(context.Background(), userID(i), "twitter")
				if d.Reason != flags.ReasonRollout {
					t.Errorf("user %d at %d%%: reason %s", i, p, d.Reason)
					return
				}
				cohort[i] = d.Arm == flags.ArmNew
			}
			mu.Lock()
			cohorts[p] = cohort
			mu.Unlock()
		})
	}
	wg.Wait()
	for k, p := range percents {
		n := 0
		for i, isNew := range cohorts[p] {
			if isNew {
				n++
			}
			if k > 0 && cohorts[percents[k-1]][i] && !isNew {
				t.Fatalf("user %d is new at %d%% but not at %d%%: rollout is not monotonic", i, percents[k-1], p)
			}
		}
		share := float64(n) / users * 100
		if share < float64(p)-1 || share > float64(p)+1 {
			t.Errorf("at %d%%: %.2f%% of users are new, want ±1%%", p, share)
		}
		t.Logf("at %d%%: %.2f%% new", p, share)
	}
}

// The same id gets the same arm in another process.
func TestRolloutIsStickyAcrossProcesses(t *testing.T) {
	if path := os.Getenv("CREDGATE_FLAGS_HELPER"); path != "" {
		return // running as the helper: TestHelperDecide does the work
	}
	r, path := flagdRollout(t, flagFile(true, 50))
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDecide$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CREDGATE_FLAGS_HELPER="+path)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper process: %v", err)
	}
	var theirs []string
	for _, line := range strings.Split(string(out), "\n") {
		if arm, ok := strings.CutPrefix(line, "arm:"); ok {
			theirs = append(theirs, arm)
		}
	}
	if len(theirs) != 2000 {
		t.Fatalf("helper printed %d decisions", len(theirs))
	}
	for i, arm := range theirs {
		if mine := r.Decide(context.Background(), userID(i), "facebook").Arm; string(mine) != arm {
			t.Fatalf("user %d: %s here, %s in another process", i, mine, arm)
		}
	}
}

func TestHelperDecide(t *testing.T) {
	path := os.Getenv("CREDGATE_FLAGS_HELPER")
	if path == "" {
		return // only meaningful as TestRolloutIsStickyAcrossProcesses's child
	}
	p, err := flags.FlagdFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := flags.NewRollout(p, flags.WithDecisionTimeout(10*time.Second))
	if err := r.StartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		fmt.Printf("arm:%s\n", r.Decide(context.Background(), userID(i), "facebook").Arm)
	}
}

func share(r *flags.Rollout, users int) float64 {
	n := 0
	for i := range users {
		if r.Decide(context.Background(), userID(i), "twitter").Arm == flags.ArmNew {
			n++
		}
	}
	return float64(n) / float64(users) * 100
}

func TestHotReloadWithoutRestart(t *testing.T) {
	r, path := flagdRollout(t, flagFile(true, 25))
	if s := share(r, 2000); s < 22 || s > 28 {
		t.Fatalf("share at 25%%: %.1f", s)
	}

	// A sampler keeps deciding through the switch: every decision must be
	// a clean new or legacy from the rollout, never an error fallback.
	stop := make(chan struct{})
	var bad atomic.Int64
	var sampled atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d := r.Decide(context.Background(), userID(i%5000), "twitter")
			if d.Reason != flags.ReasonRollout || (d.Arm != flags.ArmNew && d.Arm != flags.ArmLegacy) {
				bad.Add(1)
			}
			sampled.Add(1)
		}
	})

	start := time.Now()
	writeAtomically(t, path, flagFile(true, 75))
	var took time.Duration
	for time.Since(start) < 5*time.Second {
		if s := share(r, 500); s > 65 {
			took = time.Since(start)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if took == 0 || took > 2*time.Second {
		t.Fatalf("decisions did not move to 75%% within 2 s (took %v)", took)
	}
	if bad.Load() != 0 {
		t.Errorf("%d of %d decisions during the reload were not clean rollout decisions", bad.Load(), sampled.Load())
	}
	t.Logf("reload visible after %v; %d decisions sampled meanwhile", took, sampled.Load())
	if s := share(r, 2000); s < 72 || s > 78 {
		t.Errorf("share at 75%%: %.1f", s)
	}
}

func TestFallbacksToLegacy(t *testing.T) {
	ctx := context.Background()
	type tc struct {
		name    string
		rollout func(t *testing.T) *flags.Rollout
		user    string
		want    flags.Reason
	}
	file := func(content string) func(t *testing.T) *flags.Rollout {
		return func(t *testing.T) *flags.Rollout { r, _ := flagdRollout(t, content); return r }
	}
	cases := []tc{
		{"empty user id", file(flagFile(true, 100)), "", flags.ReasonNoIdentity},
		{"kill switch off overrides 100%", file(flagFile(false, 100)), "u1", flags.ReasonKillSwitch},
		{"kill switch flag missing", file(`{"flags":{"oauth-new-flow":{"state":"ENABLED","variants":{"new":"new"},"defaultVariant":"new"}}}`), "u1", flags.ReasonFlagNotFound},
		{"new-flow flag missing", file(`{"flags":{"oauth-new-flow-enabled":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}`), "u1", flags.ReasonFlagNotFound},
		{"empty flag file", file(`{}`), "u1", flags.ReasonFlagNotFound},
		{"empty flag set", file(`{"flags":{}}`), "u1", flags.ReasonFlagNotFound},
		{"disabled flag", file(strings.Replace(flagFile(true, 100), `"oauth-new-flow":{"state":"ENABLED"`, `"oauth-new-flow":{"state":"DISABLED"`, 1)), "u1", flags.ReasonFlagDisabled},
		{"unknown variant", file(`{"flags":{"oauth-new-flow-enabled":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"},
			"oauth-new-flow":{"state":"ENABLED","variants":{"maybe":"maybe"},"defaultVariant":"maybe"}}}`), "u1", flags.ReasonInvalidVariant},
		{"provider not started", func(t *testing.T) *flags.Rollout {
			p, _ := flags.Static(100)
			return flags.NewRollout(p) // Start never called
		}, "u1", flags.ReasonProviderNotReady},
		{"flag file missing at start", func(t *testing.T) *flags.Rollout {
			p, err := flags.FlagdFile(filepath.Join(t.TempDir(), "nope.json"), nil)
			if err != nil {
				t.Fatal(err)
			}
			r := flags.NewRollout(p)
			if err := r.StartAndWait(ctx); err != nil {
				t.Fatalf("a missing flag file must start with no flags, and apply once it exists: %v", err)
			}
			return r
		}, "u1", flags.ReasonFlagNotFound},
		{"flagd daemon unreachable", func(t *testing.T) *flags.Rollout {
			p, err := flags.FlagdRPC("127.0.0.1", 1, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			r := flags.NewRollout(p)
			if err := r.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(ctx) })
			return r
		}, "u1", flags.ReasonProviderNotReady},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.rollout(t)
			d := r.Decide(ctx, c.user, "twitter")
			if d.Arm != flags.ArmLegacy || d.Reason != c.want {
				t.Errorf("decision %+v, want legacy because %s", d, c.want)
			}
		})
	}
}

// An empty or half-written file written in place of a good one keeps
// the last good rollout; a valid but empty flag set drops every flag
// (legacy for everyone, with its own reason) until a good file returns.
func TestEmptyFileAtRuntimeKeepsTheLastGoodRollout(t *testing.T) {
	r, path := flagdRollout(t, flagFile(true, 100))
	if d := r.Decide(context.Background(), "u1", "twitter"); d.Arm != flags.ArmNew {
		t.Fatalf("at 100%%: %+v", d)
	}
	for _, malformed := range []string{"", `{"flags":{"oauth-new-flow":`, "not json"} {
		writeAtomically(t, path, malformed)
		time.Sleep(600 * time.Millisecond) // two polls
		if d := r.Decide(context.Background(), "u1", "twitter"); d.Arm != flags.ArmNew {
			t.Fatalf("after a malformed file %q: %+v, want the last good rollout", malformed, d)
		}
	}
	writeAtomically(t, path, `{"flags":{}}`)
	waitFor(t, func() bool { return r.Decide(context.Background(), "u1", "twitter").Reason == flags.ReasonFlagNotFound })
	writeAtomically(t, path, flagFile(true, 100))
	waitFor(t, func() bool { return r.Decide(context.Background(), "u1", "twitter").Arm == flags.ArmNew })
}

// Every way of saving the flag file applies, and a rollback to 0 % after
// it stops new starts within 2 s: the watch cannot die. Each pattern runs
// after the one before, on the same running rollout.
func TestEverySavePatternRollsBackWithinTwoSeconds(t *testing.T) {
	r, path := flagdRollout(t, flagFile(true, 100))
	user := "u1"
	isNew := func() bool { return r.Decide(context.Background(), user, "twitter").Arm == flags.ArmNew }
	for _, p := range flagdtest.SavePatterns(t, path) {
		// Up to 100 % with this pattern, then back to 0 % with it.
		p.Save(flagFile(true, 100))
		waitFor(t, isNew)
		p.Save(flagFile(true, 0))
		start := time.Now()
		for isNew() {
			if time.Since(start) > 2*time.Second {
				t.Fatalf("%s: new starts still going to the new flow 2 s after the rollback", p.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%s: rolled back after %v", p.Name, time.Since(start).Round(time.Millisecond))
	}
	// And the watch is still alive after the last pattern.
	writeAtomically(t, path, flagFile(true, 100))
	waitFor(t, isNew)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 3 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStaticProviderMatchesFlagd(t *testing.T) {
	for _, p := range []int{0, 33, 100} {
		st, err := flags.Static(p)
		if err != nil {
			t.Fatal(err)
		}
		static := flags.NewRollout(st, flags.WithDecisionTimeout(10*time.Second))
		static.StartAndWait(context.Background())
		flagd, _ := flagdRollout(t, flagFile(true, p))
		for i := range 3000 {
			a := static.Decide(context.Background(), userID(i), "instagram")
			b := flagd.Decide(context.Background(), userID(i), "instagram")
			wantReason := flags.ReasonRollout
			if p == 0 {
				wantReason = flags.ReasonKillSwitch // static 0% turns the switch off
			}
			if a.Arm != b.Arm || a.Reason != wantReason {
				t.Fatalf("user %d at %d%%: static %+v, flagd %+v", i, p, a, b)
			}
		}
	}
	if _, err := flags.Static(101); err == nil {
		t.Error("static 101% accepted")
	}
}

func TestDecisionsAreCounted(t *testing.T) {
	r, _ := flagdRollout(t, flagFile(true, 50))
	for i := range 200 {
		r.Decide(context.Background(), userID(i), "twitter")
	}
	r.Decide(context.Background(), "", "linkedin")
	var newN, legacyN, anon uint64
	for _, c := range r.Counts().Snapshot() {
		switch {
		case c.Platform == "twitter" && c.Arm == flags.ArmNew && c.Reason == flags.ReasonRollout && c.Variant == "new":
			newN = c.Count
		case c.Platform == "twitter" && c.Arm == flags.ArmLegacy && c.Reason == flags.ReasonRollout:
			legacyN = c.Count
		case c.Platform == "linkedin" && c.Reason == flags.ReasonNoIdentity:
			anon = c.Count
		}
	}
	if newN+legacyN != 200 || newN < 70 || anon != 1 {
		t.Errorf("counts: new %d legacy %d anonymous %d; snapshot %+v", newN, legacyN, anon, r.Counts().Snapshot())
	}
}

// hangingProvider answers nothing until released, like a flagd daemon
// that accepts connections and never replies.
type hangingProvider struct {
	release chan struct{}
}

func (hangingProvider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: "hanging"} }
func (hangingProvider) Hooks() []openfeature.Hook      { return nil }
func (p hangingProvider) BooleanEvaluation(context.Context, string, bool, openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	<-p.release
	return openfeature.BoolResolutionDetail{Value: true}
}
func (p hangingProvider) StringEvaluation(context.Context, string, string, openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	<-p.release
	return openfeature.StringResolutionDetail{Value: "new"}
}
func (hangingProvider) FloatEvaluation(context.Context, string, float64, openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	return openfeature.FloatResolutionDetail{}
}
func (hangingProvider) IntEvaluation(context.Context, string, int64, openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	return openfeature.IntResolutionDetail{}
}
func (hangingProvider) ObjectEvaluation(context.Context, string, any, openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	return openfeature.InterfaceResolutionDetail{}
}

// A decision never waits longer than its deadline: a provider that hangs
// sends the user to legacy with reason timeout, within the deadline.
func TestDecideNeverWaitsForAHangingProvider(t *testing.T) {
	t.Parallel()
	p := hangingProvider{release: make(chan struct{})}
	defer close(p.release)
	r := flags.NewRollout(p, flags.WithDecisionTimeout(50*time.Millisecond))
	if err := r.StartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d := r.Decide(context.Background(), "11111111-1111-4111-8111-111111111111", "twitter")
	// The bound is the deadline plus room for a loaded machine; the
	// hanging provider itself would hold the decision for ever.
	if took := time.Since(start); d.Arm != flags.ArmLegacy || d.Reason != flags.ReasonTimeout || took > 3*time.Second {
		t.Fatalf("decision %+v after %v, want legacy/timeout within the 50 ms deadline", d, took)
	}
	// The default deadline is 100 ms.
	r = flags.NewRollout(p)
	if err := r.StartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if d := r.Decide(context.Background(), "11111111-1111-4111-8111-111111111111", "twitter"); d.Reason != flags.ReasonTimeout || time.Since(start) > 3*time.Second {
		t.Fatalf("default deadline: %+v after %v", d, time.Since(start))
	}
}

// Every change to what the file puts in force is announced once, with the
// rollout it states; a problem is announced too, and the last good
// rollout stays in force.
func TestFileEventsStateTheRolloutInForce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	writeAtomically(t, path, flagFile(true, 25))
	events := make(chan flags.SourceEvent, 16)
	p, err := flags.FlagdFile(path, func(e flags.SourceEvent) { events <- e })
	if err != nil {
		t.Fatal(err)
	}
	r := flags.NewRollout(p)
	if err := r.StartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	next := func() flags.SourceEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(3 * time.Second):
			t.Fatal("no event")
		}
		return flags.SourceEvent{}
	}
	if e := next(); e.Rollout != "kill switch on; new flow: 25 %" || e.Problem != "" || e.LoadedAt.IsZero() || e.State != flags.SourceReady || e.Kind != "file" || e.Source != path {
		t.Fatalf("first event: %+v", e)
	}
	writeAtomically(t, path, "{half")
	if e := next(); e.Problem == "" || e.Rollout != "" || e.State != flags.SourceStale {
		t.Fatalf("malformed file: %+v", e)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Problem == "" || e.State != flags.SourceError {
		t.Fatalf("missing file: %+v", e)
	}
	writeAtomically(t, path, flagFile(false, 50))
	if e := next(); e.Rollout != "kill switch off (legacy for everyone); new flow: 50 %" || e.Problem != "" || e.State != flags.SourceReady {
		t.Fatalf("after the fix: %+v", e)
	}
	time.Sleep(600 * time.Millisecond)
	select {
	case e := <-events:
		t.Fatalf("an event without a change: %+v", e)
	default:
	}
}

// InForce states the percentage and kill switch per platform, as the
// provider evaluates them, without counting decisions.
func TestInForceStatesThePercentagePerPlatform(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile("flags.example.json")
	if err != nil {
		t.Fatal(err)
	}
	// The example starts everyone at 0 %: Twitter to 25 %, as `rollout
	// set 25 --platform twitter` would.
	set, err := flags.ParseFlagSet(example)
	if err != nil || set.SetNewPercent(25, "twitter") != nil {
		t.Fatalf("the example: %v", err)
	}
	r, _ := flagdRollout(t, string(set.Marshal()))
	ctx := context.Background()
	if got := r.InForce(ctx, "linkedin", 2000); !got.Ready || !got.KillSwitchOn || got.NewPercent != 0 || got.Problem != "" {
		t.Errorf("linkedin (held at 0 %%): %+v", got)
	}
	if got := r.InForce(ctx, "twitter", 2000); got.NewPercent < 22 || got.NewPercent > 28 || got.Samples != 2000 {
		t.Errorf("twitter (at 25 %%): %+v", got)
	}
	if n := len(r.Counts().Snapshot()); n != 0 {
		t.Errorf("InForce counted %d decision rows", n)
	}
	p, _ := flags.Static(50)
	notStarted := flags.NewRollout(p)
	if got := notStarted.InForce(ctx, "twitter", 10); got.Ready {
		t.Errorf("not started: %+v", got)
	}
}

// A rollout announced as in force (the log line, service-health) is the
// one decisions get: flagd applies new content on a goroutine of its own
// after the file source hands it over, so the announcement waits for it.
// An operator who sees 0 % after a rollback, or a runbook step that waits
// for 100 %, must not still get the old split.
func TestAnAnnouncedRolloutIsTheOneDecided(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	writeAtomically(t, path, flagFile(true, 0))
	type announced struct {
		rollout string
		decided float64
	}
	var r atomic.Pointer[flags.Rollout]
	events := make(chan announced, 16)
	p, err := flags.FlagdFile(path, func(e flags.SourceEvent) {
		if rr := r.Load(); rr != nil && e.Rollout != "" {
			events <- announced{e.Rollout, rr.InForce(context.Background(), "twitter", 200).NewPercent}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	rollout := flags.NewRollout(p, flags.WithDecisionTimeout(10*time.Second), flags.WithInForceBudget(time.Minute))
	r.Store(rollout)
	if err := rollout.StartAndWait(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rollout.Close(context.Background()) })
	for range 3 {
		for _, percent := range []int{100, 0} {
			writeAtomically(t, path, flagFile(true, percent))
			want := fmt.Sprintf("new flow: %d %%", percent)
			for {
				var got announced
				select {
				case got = <-events:
				case <-time.After(5 * time.Second):
					t.Fatalf("%q was never announced", want)
				}
				if !strings.Contains(got.rollout, want) {
					continue // the start's announcement
				}
				if got.decided != float64(percent) {
					t.Fatalf("when %q was announced, decisions were %.0f %% new", got.rollout, got.decided)
				}
				break
			}
		}
	}
}
