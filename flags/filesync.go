package flags

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	flagsync "github.com/open-feature/flagd/core/pkg/sync"
)

// fileSync feeds flagd's in-process evaluator from a flag file that
// credgate reads itself, instead of flagd's file watcher. That watcher
// follows the file's inode: an editor's save (rename the old file away,
// write a new one), a move away and back, or a delete then create left it
// watching nothing, silently, until a reload. Reading the path by name
// every pollInterval and comparing contents survives any sequence of file
// operations, symlink swaps included; flagd still parses and evaluates
// exactly as before.
//
// A missing or unreadable file, or anything but a regular file of at
// most MaxFileSize bytes, means no flags (everyone legacy) until it
// comes back. A malformed one (empty, half-written, not a flag set) keeps
// the last good flags: it must not flip the rollout; with no good file
// read yet, it means no flags.
type fileSync struct {
	path     string
	interval time.Duration
	ready    atomic.Bool
	// onEvent, if set, hears of every change: new content in force, or a
	// new problem with the file. New content is announced only once flagd
	// has put it in force (applied, which FlagdFile's provider calls):
	// flagd takes the content from Sync's channel and applies it later, on
	// a goroutine of its own, so an announcement at send time let
	// service-health and the log say "in force" before a decision saw it.
	onEvent func(SourceEvent)

	mu       sync.Mutex
	last     [32]byte // hash of what flagd has now
	absent   bool     // flagd has "no flags" because the file is gone
	loadedAt time.Time
	// problem is why the file is not (fully) in force, "" when it is.
	problem string
	// waiting holds, in order, the events not yet announced: each new
	// content's, and any problem after it.
	waiting []waitingEvent
}

// SourceEvent is a change in where the rollout comes from: new flags in
// force, or a new problem with their source (the flag file, the flagd
// daemon). Operators see it logged once and in service-health.
type SourceEvent struct {
	// Kind is "file" or "flagd_rpc"; Source is the path or host:port.
	Kind   string
	Source string
	State  SourceState
	// LoadedAt is when the flags now in force were read; zero if none.
	LoadedAt time.Time
	// Rollout summarises the flags in force, "" when credgate cannot
	// see them (none yet, or a daemon that evaluates them itself).
	Rollout string
	// Problem is why the source is not (fully) in force; "" when it is.
	Problem string
}

// SourceState is how far the flags in force can be trusted.
type SourceState string

// The source states.
const (
	// SourceReady: the source's current flags are in force.
	SourceReady SourceState = "ready"
	// SourceStale: the last good flags are in force, but the source is
	// failing now (a malformed file; a daemon whose event stream was
	// lost), so a change there may not be seen.
	SourceStale SourceState = "stale"
	// SourceError: no flags from the source are in force; everyone is on
	// the legacy flow (missing file, daemon never reached).
	SourceError SourceState = "error"
)

// pollInterval bounds how stale a rollout can be after any change to
// the file: the rollback target is 2 s.
const pollInterval = 250 * time.Millisecond

// noFlags is what flagd gets while the file is missing.
const noFlags = `{"flags":{}}`

var _ flagsync.ISync = (*fileSync)(nil)

func (f *fileSync) Init(context.Context) error { return nil }

func (f *fileSync) IsReady() bool { return f.ready.Load() }

// Sync sends the file now and after every change, until ctx ends.
func (f *fileSync) Sync(ctx context.Context, out chan<- flagsync.DataSync) error {
	f.poll(ctx, out, false)
	f.ready.Store(true)
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f.poll(ctx, out, false)
		}
	}
}

// ReSync sends the file's current content whether or not it changed.
func (f *fileSync) ReSync(ctx context.Context, out chan<- flagsync.DataSync) error {
	f.poll(ctx, out, true)
	return nil
}

// poll reads the file and hands flagd anything new.
func (f *fileSync) poll(ctx context.Context, out chan<- flagsync.DataSync, force bool) {
	// Only a regular file, and only so much of it: a named pipe must not
	// block this poll (and every rollback after it), nor /dev/zero fill
	// memory; either is a source error, everyone on legacy.
	_, data, err := ReadFile(f.path)
	f.mu.Lock()
	prevProblem := f.problem
	var send string
	switch {
	case err != nil:
		f.problem = "flag file unreadable: " + err.Error()
		if !f.absent || force {
			f.absent, f.last, send = true, [32]byte{}, noFlags
		}
	case !wellFormed(data):
		// Keep the last good flags; with none yet, no flags (legacy).
		f.problem = "flag file is not a flagd flag set; keeping the last good one"
		if f.loadedAt.IsZero() && (!f.absent || force) {
			f.problem = "flag file is not a flagd flag set, and none was read before: everyone is on the legacy flow"
			f.absent, f.last, send = true, [32]byte{}, noFlags
		}
	default:
		f.problem = ""
		if h := sha256.Sum256(data); h != f.last || f.absent || force {
			f.last, f.absent, f.loadedAt, send = h, false, time.Now(), string(data)
		}
	}
	event, changed := f.event(prevProblem, send != "", data)
	announce := changed && f.onEvent != nil
	if announce && (send != "" || len(f.waiting) > 0) {
		f.waiting = append(f.waiting, waitingEvent{event, send != ""})
		announce = false
	}
	f.mu.Unlock()
	if announce {
		f.onEvent(event)
	}
	if send == "" {
		return
	}
	select {
	case out <- flagsync.DataSync{FlagData: send, Source: f.path, Type: flagsync.ALL}:
	case <-ctx.Done():
	}
}

// waitingEvent is an event held until flagd applies the content sent
// with it (content) or before it.
type waitingEvent struct {
	event   SourceEvent
	content bool
}

// applied announces, now that flagd has put the oldest content sent in
// force, that content's event and the problems that came after it.
func (f *fileSync) applied() {
	f.mu.Lock()
	var out []SourceEvent
	for i, w := range f.waiting {
		if w.content && i > 0 {
			f.waiting = f.waiting[i:]
			break
		}
		out = append(out, w.event)
		if i == len(f.waiting)-1 {
			f.waiting = nil
		}
	}
	f.mu.Unlock()
	for _, e := range out {
		f.onEvent(e)
	}
}

// event describes the state after a poll; changed is false when nothing
// an operator would want to hear of happened. Call with f.mu held.
func (f *fileSync) event(prevProblem string, sent bool, data []byte) (SourceEvent, bool) {
	e := SourceEvent{Kind: "file", Source: f.path, LoadedAt: f.loadedAt, Problem: f.problem, State: SourceReady}
	switch {
	case f.absent:
		e.State = SourceError
	case f.problem != "":
		e.State = SourceStale
	}
	if !f.absent && !f.loadedAt.IsZero() && sent {
		e.Rollout = summarize(data)
	}
	return e, sent || f.problem != prevProblem
}

// summarize states the rollout a flag set puts in force: the kill switch's
// default and the new arm's share in each fractional split.
func summarize(data []byte) string {
	var doc struct {
		Flags map[string]struct {
			State          string                     `json:"state"`
			DefaultVariant string                     `json:"defaultVariant"`
			Variants       map[string]json.RawMessage `json:"variants"`
			Targeting      json.RawMessage            `json:"targeting"`
		} `json:"flags"`
	}
	if json.Unmarshal(data, &doc) != nil {
		return ""
	}
	kill := "kill switch missing (legacy for everyone)"
	if f, ok := doc.Flags[FlagEnabled]; ok {
		kill = "kill switch off (legacy for everyone)"
		if f.State == "ENABLED" && string(f.Variants[f.DefaultVariant]) == "true" {
			kill = "kill switch on"
		}
	}
	split := "new-flow flag missing (legacy for everyone)"
	if f, ok := doc.Flags[FlagNewFlow]; ok {
		var shares []string
		var walk func(any)
		walk = func(v any) {
			switch t := v.(type) {
			case map[string]any:
				for k, inner := range t {
					if k == "fractional" {
						shares = append(shares, newShare(inner))
					}
					walk(inner)
				}
			case []any:
				for _, inner := range t {
					walk(inner)
				}
			}
		}
		var targeting any
		json.Unmarshal(f.Targeting, &targeting)
		walk(targeting)
		split = "new flow: default variant " + f.DefaultVariant
		if len(shares) > 0 {
			split = "new flow: " + strings.Join(shares, ", ")
		}
	}
	return kill + "; " + split
}

// newShare reads a fractional split's share of the "new" variant.
func newShare(v any) string {
	buckets, _ := v.([]any)
	var total, share float64
	for _, b := range buckets {
		pair, _ := b.([]any)
		if len(pair) != 2 {
			continue
		}
		w, _ := pair[1].(float64)
		total += w
		if pair[0] == string(ArmNew) {
			share += w
		}
	}
	if total == 0 {
		return "split without weights"
	}
	return strconv.FormatFloat(100*share/total, 'f', -1, 64) + " %"
}

// wellFormed accepts a JSON object with a "flags" object, which is what
// flagd needs; anything else (an empty or half-written file) is not.
func wellFormed(data []byte) bool {
	var doc struct {
		Flags map[string]json.RawMessage `json:"flags"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	return dec.Decode(&doc) == nil && doc.Flags != nil
}
