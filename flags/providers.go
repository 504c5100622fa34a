package flags

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/go-logr/logr"
	flagd "github.com/open-feature/go-sdk-contrib/providers/flagd/pkg"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/twmb/murmur3"
)

// FlagdFile is flagd's in-process provider evaluating a flag file that
// credgate reads itself (see fileSync): any way of saving the file applies
// within pollInterval, a missing file means legacy for everyone until it
// is back, and a malformed one keeps the last good flags.
// onEvent, if not nil, hears of every change in what the file puts in
// force, and of every new problem with it.
func FlagdFile(path string, onEvent func(SourceEvent)) (openfeature.FeatureProvider, error) {
	if path == "" {
		return nil, errors.New("flags: flagd needs the path of a flag file")
	}
	evaluationLock.Lock()
	defer evaluationLock.Unlock()
	// flagd's own log lines (JSON on stderr, outside Caddy's logger) say
	// nothing the SourceEvents do not: credgate logs the file's state.
	// The provider's logger is discarded; its in-process service (v0.3.0)
	// does not take it, and still writes a line at each start and stop
	// ("operating in in-process mode…", "Shutting down data sync
	// listener").
	fs := &fileSync{path: path, interval: pollInterval, onEvent: onEvent}
	p, err := flagd.NewProvider(flagd.WithInProcessResolver(), flagd.WithLogger(logr.Discard()),
		flagd.WithCustomSyncProviderAndUri(fs, path))
	if err != nil {
		return nil, fmt.Errorf("flags: flagd file provider: %w", err)
	}
	if onEvent == nil {
		return p, nil
	}
	return &fileProvider{Provider: p, source: fs, events: make(chan openfeature.Event), stop: make(chan struct{})}, nil
}

// fileProvider is flagd's in-process provider, which tells its file
// source when it has applied what the source sent: flagd emits
// ProviderConfigChange once the new flags are in its evaluator, and only
// then does the source announce them (fileSync.onEvent).
type fileProvider struct {
	*flagd.Provider
	source *fileSync
	events chan openfeature.Event
	stop   chan struct{}
	start  sync.Once
	end    sync.Once
}

// Init initialises flagd and starts relaying its events.
func (p *fileProvider) Init(ec openfeature.EvaluationContext) error {
	if err := p.Provider.Init(ec); err != nil {
		return err
	}
	p.start.Do(func() { go p.relay() })
	return nil
}

// Shutdown stops flagd and the relay.
func (p *fileProvider) Shutdown() {
	p.Provider.Shutdown()
	p.end.Do(func() { close(p.stop) })
}

// EventChannel is how the OpenFeature SDK hears of flagd's events, each
// after the file source has heard of it.
func (p *fileProvider) EventChannel() <-chan openfeature.Event { return p.events }

func (p *fileProvider) relay() {
	in := p.Provider.EventChannel()
	for {
		select {
		case e := <-in:
			if e.EventType == openfeature.ProviderConfigChange {
				p.source.applied()
			}
			select {
			case p.events <- e:
			case <-p.stop:
				return
			}
		case <-p.stop:
			return
		}
	}
}

// FlagdRPC evaluates against a shared flagd daemon over its evaluation
// API (default port 8013). certPath enables TLS with that CA certificate.
// The provider follows the daemon for as long as it runs: down at start,
// lost later, or accepting connections and never answering, it never
// holds a decision and picks the daemon up again when it is back (see
// rpcProvider). onEvent, if not nil, hears of every change in the
// daemon's state. The provider's State method reports it on demand.
func FlagdRPC(host string, port uint16, certPath string, onEvent func(SourceEvent)) (openfeature.FeatureProvider, error) {
	if host == "" {
		return nil, errors.New("flags: flagd_rpc needs a host")
	}
	if port == 0 {
		port = 8013
	}
	return newRPCProvider(host, port, certPath, onEvent)
}

// SourceReporter is a provider that can say, at any time, the state of
// its source (FlagdRPC's provider is one).
type SourceReporter interface{ State() SourceEvent }

// Bucket is where userID falls, in [0, 100], for a fractional split of
// flagKey, exactly as flagd core v0.11.2 computes it: MurmurHash3 x86_32
// (seed 0) of flagKey+userID, read as a signed 32-bit integer, absolute
// value over MaxInt32, times 100. Variants are walked in their listed
// order; the first whose cumulative percentage exceeds the bucket wins.
// Later flagd versions changed this mapping; see flags/README.md.
func Bucket(flagKey, userID string) float64 {
	h := int32(murmur3.StringSum32(flagKey + userID))
	return math.Abs(float64(h)) / math.MaxInt32 * 100
}

// Static is a provider with a fixed percentage on the new arm, for setups
// without flagd. It buckets exactly as flagd's fractional split with
// variants [["new", percent], ["legacy", 100-percent]], so moving between
// static and flagd at the same percentage moves nobody. The kill switch is
// on unless percent is 0.
func Static(percent int) (openfeature.FeatureProvider, error) {
	if percent < 0 || percent > 100 {
		return nil, fmt.Errorf("flags: static percentage must be between 0 and 100, got %d", percent)
	}
	return staticProvider{percent: percent}, nil
}

type staticProvider struct {
	percent int
}

func (staticProvider) Metadata() openfeature.Metadata {
	return openfeature.Metadata{Name: "credgate-static"}
}

func (staticProvider) Hooks() []openfeature.Hook { return nil }

func (s staticProvider) BooleanEvaluation(_ context.Context, flag string, def bool, _ openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	if flag != FlagEnabled {
		return openfeature.BoolResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
	}
	return openfeature.BoolResolutionDetail{Value: s.percent > 0,
		ProviderResolutionDetail: openfeature.ProviderResolutionDetail{Reason: openfeature.StaticReason}}
}

func (s staticProvider) StringEvaluation(_ context.Context, flag, def string, fc openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	if flag != FlagNewFlow {
		return openfeature.StringResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
	}
	user, _ := fc[openfeature.TargetingKey].(string)
	if user == "" {
		return openfeature.StringResolutionDetail{Value: def, ProviderResolutionDetail: openfeature.ProviderResolutionDetail{
			ResolutionError: openfeature.NewTargetingKeyMissingResolutionError("no user id"), Reason: openfeature.ErrorReason}}
	}
	variant := string(ArmLegacy)
	if Bucket(flag, user) < float64(s.percent) {
		variant = string(ArmNew)
	}
	return openfeature.StringResolutionDetail{Value: variant,
		ProviderResolutionDetail: openfeature.ProviderResolutionDetail{Variant: variant, Reason: openfeature.SplitReason}}
}

func (staticProvider) FloatEvaluation(_ context.Context, flag string, def float64, _ openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	return openfeature.FloatResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
}

func (staticProvider) IntEvaluation(_ context.Context, flag string, def int64, _ openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	return openfeature.IntResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
}

func (staticProvider) ObjectEvaluation(_ context.Context, flag string, def any, _ openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	return openfeature.InterfaceResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
}

func notFound(flag string) openfeature.ProviderResolutionDetail {
	return openfeature.ProviderResolutionDetail{ResolutionError: openfeature.NewFlagNotFoundResolutionError("flag " + flag + " not found"),
		Reason: openfeature.ErrorReason}
}
