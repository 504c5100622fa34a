package flags_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/flagdtest"
)

// rpcRollout is a started rollout on the stand-in daemon d, with the
// events its provider announced.
type rpcRollout struct {
	*flags.Rollout
	state func() flags.SourceEvent

	mu     sync.Mutex
	events []flags.SourceEvent
}

func newRPCRollout(t *testing.T, d *flagdtest.Daemon) *rpcRollout {
	t.Helper()
	rr := &rpcRollout{}
	p, err := flags.FlagdRPC(d.Host, d.Port, "", func(e flags.SourceEvent) {
		rr.mu.Lock()
		rr.events = append(rr.events, e)
		rr.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	rr.state = p.(flags.SourceReporter).State
	rr.Rollout = flags.NewRollout(p)
	if err := rr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Closing never waits on the daemon, whatever it is doing.
		start := time.Now()
		rr.Close(context.Background())
		if took := time.Since(start); took > time.Second {
			t.Errorf("closing the rollout took %v", took)
		}
	})
	return rr
}

func (rr *rpcRollout) decide() flags.Decision {
	return rr.Decide(context.Background(), userID(1), "twitter")
}

// lastEvent is the provider's latest announcement.
func (rr *rpcRollout) lastEvent() flags.SourceEvent {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if len(rr.events) == 0 {
		return flags.SourceEvent{}
	}
	return rr.events[len(rr.events)-1]
}

func (rr *rpcRollout) eventStates() []flags.SourceState {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	var out []flags.SourceState
	for _, e := range rr.events {
		out = append(out, e.State)
	}
	return out
}

// waitUntil polls cond for up to limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// A daemon that is down when credgate starts is picked up when it comes
// up, with no reload; until then every decision is legacy, at once.
func TestFlagdRPCDaemonDownAtStartIsFollowedWhenItComesUp(t *testing.T) {
	t.Parallel()
	d := flagdtest.New(t, 100)
	r := newRPCRollout(t, d)

	start := time.Now()
	// Immediate: no wait for the daemon. The bound leaves room for a
	// loaded two-core machine running parallel tests; waiting on the
	// daemon would take its whole decision deadline and more.
	if dec := r.decide(); dec.Arm != flags.ArmLegacy || dec.Reason != flags.ReasonProviderNotReady || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("daemon down: %+v after %v, want an immediate legacy/provider_not_ready", dec, time.Since(start))
	}
	waitUntil(t, 10*time.Second, "the state says error", func() bool { return r.state().State == flags.SourceError && r.state().Problem != "" })

	time.Sleep(2 * time.Second)
	d.Start()
	took := waitUntil(t, 15*time.Second, "decisions follow the daemon", func() bool { return r.decide().Arm == flags.ArmNew })
	t.Logf("new decisions %v after the daemon came up", took.Round(time.Millisecond))
	if s := r.state(); s.State != flags.SourceReady || s.LoadedAt.IsZero() || s.Problem != "" {
		t.Fatalf("state after the daemon came up: %+v", s)
	}
	// The daemon staying down for 2 s was announced once, not per retry.
	if got := r.eventStates(); len(got) != 2 || got[0] != flags.SourceError || got[1] != flags.SourceReady {
		t.Fatalf("announcements %v, want [error ready]", got)
	}
}

// A daemon that dies and comes back: decisions are legacy while it is
// gone and follow it again the moment it is back; the state goes stale
// and then ready, and rollout changes on the daemon apply.
func TestFlagdRPCDaemonDiesAndComesBack(t *testing.T) {
	t.Parallel()
	d := flagdtest.New(t, 100)
	d.Start()
	r := newRPCRollout(t, d)
	waitUntil(t, 10*time.Second, "ready", func() bool { return r.decide().Arm == flags.ArmNew })

	d.Stop()
	waitUntil(t, 10*time.Second, "legacy while the daemon is gone", func() bool {
		dec := r.decide()
		return dec.Arm == flags.ArmLegacy && dec.Reason == flags.ReasonProviderNotReady
	})
	// Stale as announced, not only as State says: State reads stale as
	// soon as evaluations fail, while the event stream may not have
	// noticed the loss yet, and "ready again" must mean a new stream (a
	// loaded run reconnected only after the change below, and missed it).
	waitUntil(t, 10*time.Second, "stale while the daemon is gone", func() bool {
		return r.state().State == flags.SourceStale && r.lastEvent().State == flags.SourceStale
	})

	d.Start()
	waitUntil(t, 10*time.Second, "decisions follow the daemon back", func() bool { return r.decide().Arm == flags.ArmNew })
	waitUntil(t, 10*time.Second, "ready again", func() bool {
		return r.state().State == flags.SourceReady && r.lastEvent().State == flags.SourceReady
	})

	// A rollback on the daemon applies at once and is announced.
	r.mu.Lock()
	mark := len(r.events)
	r.mu.Unlock()
	d.SetPercent(0)
	took := waitUntil(t, 10*time.Second, "the rollback", func() bool { return r.decide().Reason == flags.ReasonKillSwitch })
	t.Logf("rolled back %v after the daemon changed", took.Round(time.Millisecond))
	// Any announcement after the change may carry it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		since := slices.Clone(r.events[mark:])
		r.mu.Unlock()
		if slices.ContainsFunc(since, func(e flags.SourceEvent) bool { return e.State == flags.SourceReady && e.Rollout != "" }) {
			return
		}
		if time.Now().After(deadline) {
			var said []string
			for _, e := range since {
				said = append(said, fmt.Sprintf("%s %q %q", e.State, e.Rollout, e.Problem))
			}
			t.Fatalf("the change was not announced within 10 s; announced since: %v", said)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A daemon that accepts connections and never answers holds no decision
// longer than the deadline, at start or after it was working, and its
// state says so.
func TestFlagdRPCDaemonThatNeverAnswers(t *testing.T) {
	t.Parallel()
	d := flagdtest.New(t, 100)
	d.Hang()
	r := newRPCRollout(t, d)
	start := time.Now()
	if dec := r.decide(); dec.Arm != flags.ArmLegacy || time.Since(start) > time.Second {
		t.Fatalf("hung at start: %+v after %v", dec, time.Since(start))
	}
	waitUntil(t, 10*time.Second, "the state says flagd never answered", func() bool {
		s := r.state()
		return s.State == flags.SourceError && strings.Contains(s.Problem, "sent nothing")
	})

	d.Start()
	waitUntil(t, 10*time.Second, "ready", func() bool { return r.decide().Arm == flags.ArmNew })

	// Frozen with its connections open, as a paused process: every
	// decision gives up at the deadline, and the probe the first one
	// starts finds the daemon failing although its stream looks fine.
	d.Freeze()
	for range 5 {
		start := time.Now()
		dec := r.decide()
		if took := time.Since(start); dec.Arm != flags.ArmLegacy || dec.Reason != flags.ReasonTimeout || took > 500*time.Millisecond {
			t.Fatalf("frozen after ready: %+v after %v, want legacy/timeout at the 100 ms deadline", dec, took)
		}
	}
	// Decisions keep coming, as traffic does: a probe runs at most once
	// per request timeout, and the one the first frozen decision would
	// start may have been skipped because an earlier one (from the
	// daemon-down phase) ran moments before, which a loaded machine
	// makes likely.
	waitUntil(t, 10*time.Second, "the state stops saying ready", func() bool {
		r.decide()
		return r.state().State != flags.SourceReady
	})
	d.Thaw()
	waitUntil(t, 10*time.Second, "decisions follow the thawed daemon", func() bool { return r.decide().Arm == flags.ArmNew })
	if s := r.state(); s.State != flags.SourceReady {
		t.Fatalf("state after the thaw: %+v", s)
	}
}

// Decisions that give up on a healthy daemon (a deadline shorter than it
// takes to answer, a client that went away) do not make it look failing.
func TestFlagdRPCAbandonedDecisionsKeepAHealthyDaemonReady(t *testing.T) {
	t.Parallel()
	d := flagdtest.New(t, 100)
	d.Start()
	r := newRPCRollout(t, d)
	waitUntil(t, 10*time.Second, "ready", func() bool { return r.decide().Arm == flags.ArmNew })
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r.Decide(ctx, userID(1), "twitter")
	}
	time.Sleep(1500 * time.Millisecond) // a probe's round trip
	if s := r.state(); s.State != flags.SourceReady {
		t.Fatalf("a healthy daemon after abandoned decisions: %+v", s)
	}
}
