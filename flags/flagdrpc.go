package flags

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"buf.build/gen/go/open-feature/flagd/connectrpc/go/flagd/evaluation/v1/evaluationv1connect"
	evaluationv1 "buf.build/gen/go/open-feature/flagd/protocolbuffers/go/flagd/evaluation/v1"
	"connectrpc.com/connect"
	"github.com/open-feature/go-sdk/openfeature"
	"google.golang.org/protobuf/types/known/structpb"
)

// rpcProvider evaluates against a flagd daemon over flagd's evaluation
// API (Connect protocol, port 8013), with flagd's own generated client.
//
// credgate owns the connection instead of using the flagd provider
// library's RPC mode (go-sdk-contrib/providers/flagd v0.3.0), which
// cannot be trusted with the rollout: its HTTP client has no dial or
// request timeout, so a daemon that accepts connections and never answers
// holds every decision; its Init waits for the daemon with the lock its
// Shutdown needs, so a config reload can hang; and it reconnects with no
// delay and gives up for good after five tries, so a daemon that is down
// when Caddy starts is never used, even after it comes back.
//
// Here:
//   - every evaluation goes to the daemon, under requestTimeout (and the
//     caller's deadline), so decisions follow the daemon the moment it
//     answers, whatever the event stream is doing;
//   - the event stream (ready, configuration changes) is only how credgate
//     knows the daemon's state: it is reconnected for as long as the
//     provider runs, with backoff from minBackoff capped at maxBackoff;
//   - a daemon that accepts the stream but sends nothing within
//     answerTimeout counts as down; one that stops answering later is
//     found by the probe an abandoned evaluation starts (probeAside).
type rpcProvider struct {
	addr   string
	client evaluationv1connect.ServiceClient

	requestTimeout time.Duration
	answerTimeout  time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration

	onEvent func(SourceEvent)
	events  chan openfeature.Event

	startOnce sync.Once
	ready     chan struct{} // closed at the daemon's first provider_ready
	readyOnce sync.Once
	stop      chan struct{}
	stopOnce  sync.Once
	done      chan struct{}

	mu     sync.Mutex
	status SourceEvent
	// evalFailing is set while evaluations fail at the transport (the
	// daemon stopped answering while the stream looks fine).
	evalFailing atomic.Bool
	// probing is set while a probe runs (see probeAside); lastProbe
	// limits probes to one per requestTimeout.
	probing   atomic.Bool
	lastProbe atomic.Int64
}

// The RPC timings. Decisions are bounded by Rollout's own deadline
// (100 ms by default) as well; requestTimeout bounds any other caller.
const (
	rpcDialTimeout     = time.Second
	rpcRequestTimeout  = time.Second
	rpcAnswerTimeout   = 3 * time.Second
	rpcMinBackoff      = 100 * time.Millisecond
	rpcMaxBackoff      = 2 * time.Second
	rpcProviderName    = "credgate-flagd-rpc"
	rpcEventBufferSize = 16
)

func newRPCProvider(host string, port uint16, certPath string, onEvent func(SourceEvent)) (*rpcProvider, error) {
	addr := net.JoinHostPort(host, fmt.Sprint(port))
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: rpcDialTimeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout: rpcDialTimeout,
		// A backstop only: the event stream's own timer (answerTimeout)
		// is what names a silent daemon, and must fire first, or the
		// state says "timeout awaiting response headers" instead.
		ResponseHeaderTimeout: rpcAnswerTimeout + time.Second,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}
	scheme := "http"
	if certPath != "" {
		pem, err := os.ReadFile(certPath)
		if err != nil {
			return nil, fmt.Errorf("flags: flagd_rpc CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("flags: flagd_rpc CA certificate %s holds no PEM certificate", certPath)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	p := &rpcProvider{
		addr:           addr,
		client:         evaluationv1connect.NewServiceClient(&http.Client{Transport: transport}, scheme+"://"+addr),
		requestTimeout: rpcRequestTimeout,
		answerTimeout:  rpcAnswerTimeout,
		minBackoff:     rpcMinBackoff,
		maxBackoff:     rpcMaxBackoff,
		onEvent:        onEvent,
		events:         make(chan openfeature.Event, rpcEventBufferSize),
		ready:          make(chan struct{}),
		stop:           make(chan struct{}),
		done:           make(chan struct{}),
	}
	p.status = SourceEvent{Kind: "flagd_rpc", Source: addr, State: SourceError, Problem: "not connected to flagd yet"}
	return p, nil
}

func (p *rpcProvider) Metadata() openfeature.Metadata {
	return openfeature.Metadata{Name: rpcProviderName}
}

func (p *rpcProvider) Hooks() []openfeature.Hook { return nil }

// EventChannel is how the OpenFeature SDK hears of the daemon's state.
func (p *rpcProvider) EventChannel() <-chan openfeature.Event { return p.events }

// Init starts following the daemon and returns when it is first ready, or
// when the provider is shut down. The SDK runs it in the background
// (Rollout.Start), so a daemon that is down does not hold up Caddy;
// decisions are legacy (provider_not_ready) until then.
func (p *rpcProvider) Init(openfeature.EvaluationContext) error {
	p.startOnce.Do(func() { go p.follow() })
	select {
	case <-p.ready:
		return nil
	case <-p.stop:
		return errors.New("flags: flagd rpc provider shut down before flagd was ready")
	}
}

// Shutdown stops following the daemon. It never waits on the network.
func (p *rpcProvider) Shutdown() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.startOnce.Do(func() { close(p.done) }) // never started
	<-p.done
}

// follow keeps the event stream open for as long as the provider runs.
func (p *rpcProvider) follow() {
	defer close(p.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-p.stop
		cancel()
	}()
	delay := p.minBackoff
	for {
		opened := time.Now()
		answered, err := p.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		// Back to a short delay only after a stream that held: a daemon
		// (or a proxy) that answers and hangs up at once must not be
		// redialled ten times a second.
		if answered && time.Since(opened) >= p.maxBackoff {
			delay = p.minBackoff
		}
		p.lost(err)
		select {
		case <-p.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, p.maxBackoff)
	}
}

// stream reads the daemon's event stream until it ends; answered is true
// if the daemon sent anything at all.
func (p *rpcProvider) stream(ctx context.Context) (answered bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A daemon that accepts the connection and sends nothing must not
	// look connected: flagd sends provider_ready first, at once.
	silent := time.AfterFunc(p.answerTimeout, func() {
		cancel(fmt.Errorf("flagd at %s accepted the connection but sent nothing within %s", p.addr, p.answerTimeout))
	})
	defer silent.Stop()
	s, err := p.client.EventStream(ctx, connect.NewRequest(&evaluationv1.EventStreamRequest{}))
	if err != nil {
		return false, causeOf(ctx, err)
	}
	defer s.Close()
	for s.Receive() {
		if !answered {
			answered = true
			silent.Stop()
		}
		switch msg := s.Msg(); msg.GetType() {
		case "provider_ready":
			p.connected(nil)
		case "configuration_change":
			p.connected(changedFlags(msg.GetData()))
		}
	}
	if err := s.Err(); err != nil {
		return answered, causeOf(ctx, err)
	}
	return answered, errors.New("flagd closed the event stream")
}

func causeOf(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// changedFlags lists the flag keys a configuration_change names.
func changedFlags(data *structpb.Struct) []string {
	changed := data.GetFields()["flags"].GetStructValue().GetFields()
	keys := make([]string, 0, len(changed))
	for k := range changed {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// connected records a ready daemon (or new flags on it).
func (p *rpcProvider) connected(changed []string) {
	p.mu.Lock()
	was := p.status
	p.status = SourceEvent{Kind: "flagd_rpc", Source: p.addr, State: SourceReady, LoadedAt: time.Now()}
	if changed != nil {
		p.status.Rollout = "flags changed on the daemon: " + strings.Join(changed, ", ")
	}
	e := p.status
	p.mu.Unlock()
	p.evalFailing.Store(false)

	first := false
	p.readyOnce.Do(func() { close(p.ready); first = true })
	switch {
	case first:
		// Init's return makes the SDK emit ready.
	case changed != nil:
		p.emit(openfeature.ProviderConfigChange, "flags changed", changed)
	case was.State != SourceReady:
		p.emit(openfeature.ProviderReady, "reconnected to flagd", nil)
	}
	if changed != nil || was.State != SourceReady {
		p.announce(e)
	}
}

// lost records a stream that ended: stale once the daemon has been ready
// (its last flags are still what it evaluates, if it answers), an error
// before that.
func (p *rpcProvider) lost(err error) {
	problem := "flagd event stream lost: " + err.Error()
	p.mu.Lock()
	was := p.status
	p.status.Problem = problem
	p.status.Rollout = ""
	if was.State != SourceError {
		p.status.State = SourceStale
	}
	if was.LoadedAt.IsZero() {
		p.status.State = SourceError
		p.status.Problem = "cannot reach flagd: " + err.Error()
	}
	e := p.status
	p.mu.Unlock()
	if e.State == was.State && e.Problem == was.Problem {
		return // the same failure again, at a retry: said once already
	}
	if e.State == SourceStale {
		p.emit(openfeature.ProviderStale, problem, nil)
	}
	p.announce(e)
}

func (p *rpcProvider) announce(e SourceEvent) {
	if p.onEvent != nil {
		p.onEvent(e)
	}
}

func (p *rpcProvider) emit(t openfeature.EventType, message string, changed []string) {
	select {
	case p.events <- openfeature.Event{ProviderName: rpcProviderName, EventType: t,
		ProviderEventDetails: openfeature.ProviderEventDetails{Message: message, FlagChanges: changed}}:
	case <-p.stop:
	default:
		// The SDK reads this channel continuously; a full buffer means it
		// has stopped, and the event has no one to tell.
	}
}

// State is the daemon as service-health reports it.
func (p *rpcProvider) State() SourceEvent {
	p.mu.Lock()
	e := p.status
	p.mu.Unlock()
	if e.State == SourceReady && p.evalFailing.Load() {
		e.State = SourceStale
		e.Problem = "flagd is connected but evaluations are failing"
	}
	return e
}

// evaluated notes whether an evaluation reached the daemon. caller is the
// caller's context: when it ended first (the decision deadline, a client
// that went away) the failure says nothing of the daemon, so a probe of
// its own, with the full requestTimeout, finds out aside.
func (p *rpcProvider) evaluated(caller context.Context, err error) openfeature.ResolutionError {
	if err == nil {
		p.evalFailing.Store(false)
		return openfeature.ResolutionError{}
	}
	var ce *connect.Error
	code := connect.CodeUnknown
	if errors.As(err, &ce) {
		code = ce.Code()
	}
	// The daemon reads the caller's deadline from the request and may
	// answer "deadline exceeded" a moment before the caller's context
	// ends: the caller's deadline, too, not the daemon's health.
	if caller.Err() != nil || code == connect.CodeDeadlineExceeded || code == connect.CodeCanceled {
		p.probeAside()
		return openfeature.NewGeneralResolutionError("flagd evaluation abandoned: " + code.String())
	}
	switch code {
	case connect.CodeNotFound:
		return openfeature.NewFlagNotFoundResolutionError(ce.Message())
	case connect.CodeInvalidArgument:
		return openfeature.NewTypeMismatchResolutionError(ce.Message())
	case connect.CodeDataLoss:
		return openfeature.NewParseErrorResolutionError(ce.Message())
	case connect.CodeUnavailable:
		p.evalFailing.Store(true)
		return openfeature.NewProviderNotReadyResolutionError("flagd unreachable")
	}
	p.evalFailing.Store(true)
	return openfeature.NewGeneralResolutionError("flagd evaluation failed: " + code.String())
}

// probeAside evaluates the kill switch once, in the background, under
// requestTimeout alone, and records whether the daemon answered: a daemon
// that hangs after its stream opened is seen as failing even though every
// decision gives up on it at its own, shorter, deadline. One probe at a
// time, at most one per requestTimeout.
func (p *rpcProvider) probeAside() {
	now := time.Now().UnixNano()
	if now-p.lastProbe.Load() < int64(p.requestTimeout) || !p.probing.CompareAndSwap(false, true) {
		return
	}
	p.lastProbe.Store(now)
	go func() {
		defer p.probing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), p.requestTimeout)
		defer cancel()
		probe, _ := structpb.NewStruct(map[string]any{openfeature.TargetingKey: "credgate-probe"})
		_, err := p.client.ResolveBoolean(ctx, connect.NewRequest(&evaluationv1.ResolveBooleanRequest{FlagKey: FlagEnabled, Context: probe}))
		var ce *connect.Error
		switch {
		case err == nil:
			p.evalFailing.Store(false)
		case errors.As(err, &ce) && (ce.Code() == connect.CodeNotFound || ce.Code() == connect.CodeInvalidArgument):
			p.evalFailing.Store(false) // it answered
		default:
			p.evalFailing.Store(true)
		}
	}()
}

// request bounds one evaluation by requestTimeout.
func (p *rpcProvider) request(ctx context.Context, fc openfeature.FlattenedContext) (context.Context, context.CancelFunc, *structpb.Struct, error) {
	evalCtx, err := structpb.NewStruct(fc)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.requestTimeout)
	return ctx, cancel, evalCtx, nil
}

func (p *rpcProvider) BooleanEvaluation(caller context.Context, flag string, def bool, fc openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	ctx, cancel, evalCtx, err := p.request(caller, fc)
	if err != nil {
		return openfeature.BoolResolutionDetail{Value: def, ProviderResolutionDetail: failed(openfeature.NewParseErrorResolutionError(err.Error()))}
	}
	defer cancel()
	res, err := p.client.ResolveBoolean(ctx, connect.NewRequest(&evaluationv1.ResolveBooleanRequest{FlagKey: flag, Context: evalCtx}))
	if rerr := p.evaluated(caller, err); err != nil {
		return openfeature.BoolResolutionDetail{Value: def, ProviderResolutionDetail: failed(rerr)}
	}
	return openfeature.BoolResolutionDetail{Value: res.Msg.GetValue(), ProviderResolutionDetail: resolved(res.Msg.GetReason(), res.Msg.GetVariant())}
}

func (p *rpcProvider) StringEvaluation(caller context.Context, flag, def string, fc openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	ctx, cancel, evalCtx, err := p.request(caller, fc)
	if err != nil {
		return openfeature.StringResolutionDetail{Value: def, ProviderResolutionDetail: failed(openfeature.NewParseErrorResolutionError(err.Error()))}
	}
	defer cancel()
	res, err := p.client.ResolveString(ctx, connect.NewRequest(&evaluationv1.ResolveStringRequest{FlagKey: flag, Context: evalCtx}))
	if rerr := p.evaluated(caller, err); err != nil {
		return openfeature.StringResolutionDetail{Value: def, ProviderResolutionDetail: failed(rerr)}
	}
	return openfeature.StringResolutionDetail{Value: res.Msg.GetValue(), ProviderResolutionDetail: resolved(res.Msg.GetReason(), res.Msg.GetVariant())}
}

// credgate's rollout uses a boolean and a string flag only.
func (p *rpcProvider) FloatEvaluation(_ context.Context, flag string, def float64, _ openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	return openfeature.FloatResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
}

func (p *rpcProvider) IntEvaluation(_ context.Context, flag string, def int64, _ openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	return openfeature.IntResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
}

func (p *rpcProvider) ObjectEvaluation(_ context.Context, flag string, def any, _ openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	return openfeature.InterfaceResolutionDetail{Value: def, ProviderResolutionDetail: notFound(flag)}
}

func failed(e openfeature.ResolutionError) openfeature.ProviderResolutionDetail {
	return openfeature.ProviderResolutionDetail{ResolutionError: e, Reason: openfeature.ErrorReason}
}

func resolved(reason, variant string) openfeature.ProviderResolutionDetail {
	return openfeature.ProviderResolutionDetail{Reason: openfeature.Reason(reason), Variant: variant}
}

var (
	_ openfeature.FeatureProvider = (*rpcProvider)(nil)
	_ openfeature.StateHandler    = (*rpcProvider)(nil)
	_ openfeature.EventHandler    = (*rpcProvider)(nil)
)
