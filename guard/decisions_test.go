package guard_test

import (
	"context"
	"testing"
	"time"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/guard"
	"github.com/credgate/credgate/internal/pgtest"
)

// Two replicas' decisions add up in one window, each counted once however
// often it flushes, and by reason.
func TestDecisionsAreSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	ctx := context.Background()
	replica := func() (*flags.Rollout, *guard.DecisionLog) {
		p, err := flags.Static(100)
		if err != nil {
			t.Fatal(err)
		}
		r := flags.NewRollout(p)
		if err := r.StartAndWait(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(context.Background()) })
		return r, guard.NewDecisionLog(pgtest.Pool(t, url), r.Counts())
	}
	ra, la := replica()
	rb, lb := replica()
	for range 3 {
		ra.Decide(ctx, "", "twitter") // no identity
	}
	ra.Decide(ctx, "11111111-1111-4111-8111-111111111111", "twitter")
	rb.Decide(ctx, "", "twitter")
	rb.Decide(ctx, "22222222-2222-4222-8222-222222222222", "linkedin")
	for range 2 { // a second flush with nothing new adds nothing
		for _, l := range []*guard.DecisionLog{la, lb} {
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := guard.DecisionsInWindow(ctx, pgtest.Pool(t, url), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]guard.ReasonCount{
		"twitter":  {{Arm: "legacy", Reason: "no_identity", Decisions: 4}, {Arm: "new", Reason: "rollout", Decisions: 1}},
		"linkedin": {{Arm: "new", Reason: "rollout", Decisions: 1}},
	}
	for platform, list := range want {
		if len(got[platform]) != len(list) {
			t.Fatalf("%s: %+v, want %+v", platform, got[platform], list)
		}
		for i := range list {
			if got[platform][i] != list[i] {
				t.Errorf("%s[%d]: %+v, want %+v", platform, i, got[platform][i], list[i])
			}
		}
	}
}
