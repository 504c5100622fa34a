// Package flagdtest runs a stand-in flagd daemon for tests: a server that
// speaks flagd's evaluation API over the Connect protocol (ResolveBoolean,
// ResolveString and EventStream, with flagd's own generated handler), on
// a fixed local port, so a test can start it late, stop it, bring it back,
// change its rollout, make it accept connections and never answer, or
// freeze it with its connections open.
//
// It evaluates with flags.Static, which buckets exactly as flagd's
// fractional split: these tests are about the connection, and flagd
// core's rule engine keeps a process-wide table that parallel tests
// creating in-process providers would race on.
package flagdtest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"buf.build/gen/go/open-feature/flagd/connectrpc/go/flagd/evaluation/v1/evaluationv1connect"
	evaluationv1 "buf.build/gen/go/open-feature/flagd/protocolbuffers/go/flagd/evaluation/v1"
	"connectrpc.com/connect"
	"github.com/open-feature/go-sdk/openfeature"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/credgate/credgate/flags"
	"github.com/credgate/credgate/internal/testport"
)

// Daemon is the stand-in. Host and Port do not change across Stop and
// Start.
type Daemon struct {
	Host string
	Port uint16

	t  testing.TB
	mu sync.Mutex
	// provider evaluates at the current percentage.
	provider openfeature.FeatureProvider
	watchers map[chan *evaluationv1.EventStreamResponse]struct{}
	srv      *http.Server
	hung     net.Listener
	hungConn []net.Conn
	// thaw is open while the daemon is frozen.
	thaw chan struct{}
}

// Freeze makes the running daemon stop answering, as a paused process
// would: open streams and connections stay open, new requests wait.
func (d *Daemon) Freeze() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.thaw == nil {
		d.thaw = make(chan struct{})
	}
}

// Thaw undoes Freeze.
func (d *Daemon) Thaw() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.thaw != nil {
		close(d.thaw)
		d.thaw = nil
	}
}

// wait blocks while the daemon is frozen; false when ctx ended first.
func (d *Daemon) wait(ctx context.Context) bool {
	d.mu.Lock()
	thaw := d.thaw
	d.mu.Unlock()
	if thaw == nil {
		return true
	}
	select {
	case <-thaw:
		return true
	case <-ctx.Done():
		return false
	}
}

// New reserves a free local port for a daemon serving percent % on the
// new arm, without starting it. Everything it starts stops at cleanup.
func New(t testing.TB, percent int) *Daemon {
	t.Helper()
	port := testport.Free(t)
	d := &Daemon{Host: "127.0.0.1", Port: uint16(port), t: t, watchers: map[chan *evaluationv1.EventStreamResponse]struct{}{}}
	d.SetPercent(percent)
	t.Cleanup(func() { d.Thaw(); d.Stop() })
	return d
}

// Addr is host:port.
func (d *Daemon) Addr() string { return net.JoinHostPort(d.Host, strconv.Itoa(int(d.Port))) }

// Start serves flagd's evaluation API on the daemon's port.
func (d *Daemon) Start() {
	d.t.Helper()
	d.Stop()
	ln := d.listen()
	path, handler := evaluationv1connect.NewServiceHandler(service{d})
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.mu.Lock()
	d.srv = srv
	d.mu.Unlock()
	go srv.Serve(ln)
}

// Hang accepts connections on the daemon's port and never answers.
func (d *Daemon) Hang() {
	d.t.Helper()
	d.Stop()
	ln := d.listen()
	d.mu.Lock()
	d.hung = ln
	d.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.hungConn = append(d.hungConn, c)
			d.mu.Unlock()
		}
	}()
}

// listen binds the daemon's port, retrying briefly: the kernel may still
// hold it from the previous Stop.
func (d *Daemon) listen() net.Listener {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", d.Addr()); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.t.Fatalf("flagdtest: cannot listen on %s: %v", d.Addr(), err)
	return nil
}

// Stop closes the port and every connection, as a dying daemon would.
func (d *Daemon) Stop() {
	d.mu.Lock()
	srv, hung, conns := d.srv, d.hung, d.hungConn
	d.srv, d.hung, d.hungConn = nil, nil, nil
	d.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	if hung != nil {
		hung.Close()
	}
	for _, c := range conns {
		c.Close()
	}
}

// SetPercent changes the rollout and tells every event stream, as flagd
// does after its flag file changes.
func (d *Daemon) SetPercent(percent int) {
	p, err := flags.Static(percent)
	if err != nil {
		d.t.Fatal(err)
	}
	change := &evaluationv1.EventStreamResponse{Type: "configuration_change", Data: mustStruct(map[string]any{
		"flags": map[string]any{flags.FlagEnabled: map[string]any{"type": "update"}, flags.FlagNewFlow: map[string]any{"type": "update"}},
	})}
	d.mu.Lock()
	d.provider = p
	for w := range d.watchers {
		select {
		case w <- change:
		default:
		}
	}
	d.mu.Unlock()
}

func (d *Daemon) current() openfeature.FeatureProvider {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.provider
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// service is flagd's evaluation API over the daemon's provider.
type service struct {
	d *Daemon
}

func (s service) ResolveBoolean(ctx context.Context, req *connect.Request[evaluationv1.ResolveBooleanRequest]) (*connect.Response[evaluationv1.ResolveBooleanResponse], error) {
	if !s.d.wait(ctx) {
		return nil, ctx.Err()
	}
	r := s.d.current().BooleanEvaluation(ctx, req.Msg.GetFlagKey(), false, req.Msg.GetContext().AsMap())
	if err := wireError(r.ResolutionError); err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveBooleanResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant}), nil
}

func (s service) ResolveString(ctx context.Context, req *connect.Request[evaluationv1.ResolveStringRequest]) (*connect.Response[evaluationv1.ResolveStringResponse], error) {
	if !s.d.wait(ctx) {
		return nil, ctx.Err()
	}
	r := s.d.current().StringEvaluation(ctx, req.Msg.GetFlagKey(), "", req.Msg.GetContext().AsMap())
	if err := wireError(r.ResolutionError); err != nil {
		return nil, err
	}
	return connect.NewResponse(&evaluationv1.ResolveStringResponse{Value: r.Value, Reason: string(r.Reason), Variant: r.Variant}), nil
}

// wireError is how flagd puts an evaluation error on the wire.
func wireError(e openfeature.ResolutionError) error {
	if e == (openfeature.ResolutionError{}) {
		return nil
	}
	msg := e.Error()
	switch {
	case strings.HasPrefix(msg, string(openfeature.FlagNotFoundCode)):
		return connect.NewError(connect.CodeNotFound, errors.New(msg))
	case strings.HasPrefix(msg, string(openfeature.TypeMismatchCode)):
		return connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
	}
	return connect.NewError(connect.CodeUnknown, errors.New(msg))
}

// EventStream sends provider_ready at once, then each configuration
// change, with a keep_alive every second.
func (s service) EventStream(ctx context.Context, _ *connect.Request[evaluationv1.EventStreamRequest], out *connect.ServerStream[evaluationv1.EventStreamResponse]) error {
	w := make(chan *evaluationv1.EventStreamResponse, 8)
	s.d.mu.Lock()
	s.d.watchers[w] = struct{}{}
	s.d.mu.Unlock()
	defer func() {
		s.d.mu.Lock()
		delete(s.d.watchers, w)
		s.d.mu.Unlock()
	}()
	if err := out.Send(&evaluationv1.EventStreamResponse{Type: "provider_ready"}); err != nil {
		return err
	}
	keepAlive := time.NewTicker(time.Second)
	defer keepAlive.Stop()
	for {
		var msg *evaluationv1.EventStreamResponse
		select {
		case <-ctx.Done():
			return nil
		case msg = <-w:
		case <-keepAlive.C:
			msg = &evaluationv1.EventStreamResponse{Type: "keep_alive"}
		}
		if !s.d.wait(ctx) {
			return nil
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}

func (service) ResolveAll(context.Context, *connect.Request[evaluationv1.ResolveAllRequest]) (*connect.Response[evaluationv1.ResolveAllResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not served by flagdtest"))
}

func (service) ResolveFloat(context.Context, *connect.Request[evaluationv1.ResolveFloatRequest]) (*connect.Response[evaluationv1.ResolveFloatResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not served by flagdtest"))
}

func (service) ResolveInt(context.Context, *connect.Request[evaluationv1.ResolveIntRequest]) (*connect.Response[evaluationv1.ResolveIntResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not served by flagdtest"))
}

func (service) ResolveObject(context.Context, *connect.Request[evaluationv1.ResolveObjectRequest]) (*connect.Response[evaluationv1.ResolveObjectResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not served by flagdtest"))
}
