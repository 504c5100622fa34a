package sandbox

import (
	"fmt"
	"testing"
	"time"
)

// What forget keeps beside the map must stay in proportion to the map,
// whichever way values go: past the cap, by their lifetimes, or both at
// once (a long run at the cap whose access tokens also expire). And past
// the cap exactly the newest max values stay.
func TestForgettingKeepsItsBookkeepingInProportion(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bounded := func(t *testing.T, f *forgetting, m map[string]int, when string) {
		t.Helper()
		due, order := f.held()
		if limit := 2*len(m) + 64; due > limit || order > limit {
			t.Fatalf("%s: %d values held, but %d due entries and %d in issue order (limit %d)", when, len(m), due, order, limit)
		}
	}

	t.Run("past the cap", func(t *testing.T) {
		t.Parallel()
		f, m := &forgetting{max: 100}, map[string]int{}
		for i := range 10_000 {
			k := fmt.Sprint(i)
			m[k] = i
			f.remember(k, t0.Add(180*24*time.Hour))
			forget(f, m, t0)
			if len(m) > 100 {
				t.Fatalf("after %d issued: %d held past a cap of 100", i+1, len(m))
			}
			bounded(t, f, m, fmt.Sprintf("after %d issued", i+1))
		}
		for i := 9_900; i < 10_000; i++ {
			if _, ok := m[fmt.Sprint(i)]; !ok {
				t.Fatalf("value %d, among the newest 100, was forgotten", i)
			}
		}
	})

	t.Run("by lifetime", func(t *testing.T) {
		t.Parallel()
		f, m := &forgetting{max: 1_000_000}, map[string]int{}
		now := t0
		for i := range 10_000 {
			k := fmt.Sprint(i)
			m[k] = i
			f.remember(k, now.Add(time.Minute))
			now = now.Add(time.Second)
			forget(f, m, now)
			if len(m) > 60 {
				t.Fatalf("after %d issued a second apart: %d held, but only the last minute's may be", i+1, len(m))
			}
			bounded(t, f, m, fmt.Sprintf("after %d issued", i+1))
		}
	})

	t.Run("both", func(t *testing.T) {
		t.Parallel()
		// Pairs as Twitter issues them: an access token for two hours, a
		// refresh token for 180 days, under a cap the refresh tokens reach.
		f, m := &forgetting{max: 500}, map[string]int{}
		now := t0
		for i := range 20_000 {
			m[fmt.Sprint("a", i)], m[fmt.Sprint("r", i)] = i, i
			f.remember(fmt.Sprint("a", i), now.Add(2*time.Hour))
			f.remember(fmt.Sprint("r", i), now.Add(180*24*time.Hour))
			now = now.Add(time.Minute)
			forget(f, m, now)
			if len(m) > 500 {
				t.Fatalf("after %d pairs: %d held past a cap of 500", i+1, len(m))
			}
			bounded(t, f, m, fmt.Sprintf("after %d pairs", i+1))
		}
		if _, ok := m["a19999"]; !ok {
			t.Fatal("the newest access token was forgotten")
		}
	})
}

// held is how many keys f's two lists hold (compaction keeps each within
// twice the map's size, plus a little).
func (f *forgetting) held() (due, order int) { return f.due.Len(), len(f.order) - f.head }
