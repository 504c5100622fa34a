package flags_test

import (
	"context"
	"testing"

	"github.com/credgate/credgate/flags"
)

// BenchmarkDecide measures one decision (kill switch + split) with the
// flagd in-process provider against the static provider in the same run.
// Users cycle through 10,000 ids so nothing is cached.
func BenchmarkDecide(b *testing.B) {
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = userID(i)
	}
	run := func(b *testing.B, r *flags.Rollout) {
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			r.Decide(ctx, ids[i%len(ids)], "twitter")
			i++
		}
	}
	b.Run("static", func(b *testing.B) {
		p, _ := flags.Static(25)
		r := flags.NewRollout(p)
		r.StartAndWait(context.Background())
		run(b, r)
	})
	b.Run("flagd", func(b *testing.B) {
		r, _ := flagdRollout(b, flagFile(true, 25))
		run(b, r)
	})
}
