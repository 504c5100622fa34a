package identity_test

import (
	"testing"
	"time"

	"github.com/credgate/credgate/identity"
)

// The watch warns once a minute at most, only with enough requests, only
// when most are unrecognised, only with the rollout on, and forgets what
// is older than a minute.
func TestWatchWarnsOnlyWhenItMatters(t *testing.T) {
	t.Parallel()
	var w identity.Watch
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	on := func() bool { return true }
	for range 9 {
		w.Record(identity.Missing, now)
	}
	if _, warn := w.Warn(now, on); warn {
		t.Error("warned on 9 requests")
	}
	w.Record(identity.Expired, now)
	v, warn := w.Warn(now, on)
	if !warn || v.Commonest != identity.Missing || v.UnusableShare != 1 || v.Requests != 10 {
		t.Fatalf("10 unrecognised: warn %v, view %+v", warn, v)
	}
	if _, warn := w.Warn(now.Add(30*time.Second), on); warn {
		t.Error("warned twice within a minute")
	}
	// A minute later the old requests are gone: nothing to warn about.
	if v, warn := w.Warn(now.Add(61*time.Second), on); warn || v.Requests != 0 {
		t.Errorf("a minute later: warn %v, %d requests", warn, v.Requests)
	}
	// Mostly recognised: no warning; rollout at 0 %: no warning.
	later := now.Add(5 * time.Minute)
	for range 8 {
		w.Record(identity.OK, later)
	}
	for range 4 {
		w.Record(identity.Missing, later)
	}
	if _, warn := w.Warn(later, on); warn {
		t.Error("warned with two thirds recognised")
	}
	for range 10 {
		w.Record(identity.BadSignature, later)
	}
	if _, warn := w.Warn(later, func() bool { return false }); warn {
		t.Error("warned with the rollout at 0 %")
	}
}
