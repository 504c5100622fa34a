package ratelimit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/credgate/credgate/internal/ratelimit"
)

func TestBurstThenRefill(t *testing.T) {
	l := ratelimit.New(10, time.Minute)
	now := time.Unix(1_800_000_000, 0)
	for i := range 10 {
		if ok, _ := l.Allow("alice/twitter", now); !ok {
			t.Fatalf("event %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("alice/twitter", now)
	if ok || wait < 5*time.Second || wait > 7*time.Second {
		t.Fatalf("11th event: ok %v, retry after %v; want refused, ~6 s", ok, wait)
	}
	if ok, _ := l.Allow("bob/twitter", now); !ok {
		t.Fatal("another key shares the bucket")
	}
	if ok, _ := l.Allow("alice/twitter", now.Add(6*time.Second)); !ok {
		t.Fatal("no refill after 6 s")
	}
}

func TestIdleKeysAreDropped(t *testing.T) {
	l := ratelimit.New(10, time.Minute)
	now := time.Unix(1_800_000_000, 0)
	for i := range 1000 {
		l.Allow(fmt.Sprint("user-", i), now)
	}
	l.Allow("late", now.Add(2*time.Minute))
	if n := l.Len(); n != 1 {
		t.Fatalf("%d keys held after they all refilled, want 1", n)
	}
}
