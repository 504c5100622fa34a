package caddymodule

import (
	"context"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"

	"github.com/credgate/credgate/telemetry"
)

// tracingKey names the process's one tracer provider in the usage pool:
// fifty reloads must leave one provider (and one exporter) alive, not
// fifty; the last config to let go flushes and shuts it down.
const tracingKey = "credgate.tracing"

var tracingPool = caddy.NewUsagePool()

type sharedTracing struct{ *telemetry.Export }

func (t sharedTracing) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return t.Shutdown(ctx)
}

// provisionTracing takes the shared provider, built from the OTEL_*
// variables the first time.
func (a *App) provisionTracing() error {
	t, _, err := tracingPool.LoadOrNew(tracingKey, func() (caddy.Destructor, error) {
		tr, err := telemetry.ExportFromEnv(context.Background(), a.metrics)
		return sharedTracing{tr}, err
	})
	if err != nil {
		return err
	}
	a.tracing = t.(sharedTracing).Export
	a.holdsTracing = true
	return nil
}

// tracer is credgate's tracer. It resolves the provider at each span, so
// a test can swap in an in-memory one after the config has loaded.
func (a *App) tracer() trace.Tracer { return appTracer{app: a} }

type appTracer struct {
	embedded.Tracer
	app *App
}

func (t appTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	tr := t.app.tracing
	if o := t.app.run.tracing.Load(); o != nil {
		tr = o
	}
	return tr.Tracer().Start(ctx, name, opts...)
}

// setTracing replaces the provider; for tests with an in-memory exporter.
func (a *App) setTracing(t *telemetry.Export) { a.run.tracing.Store(t) }

// spanWriter remembers the stable error code a credgate response
// carried (writeError, or an oauth_error redirect), for its route's span.
type spanWriter struct {
	http.ResponseWriter
	code   string
	status int
}

func (s *spanWriter) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *spanWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// noteCode records code on w's span, if w is a spanWriter.
func noteCode(w http.ResponseWriter, code string) {
	if sw, ok := w.(*spanWriter); ok {
		sw.code = code
	}
}

// traced serves a credgate route inside a span named name, a child of
// the request span when Caddy's tracing directive started one, and ends
// it with the route's outcome.
func (a *App) traced(w http.ResponseWriter, r *http.Request, name string, attrs []trace.SpanStartOption, serve func(http.ResponseWriter, *http.Request)) {
	ctx, span := a.tracer().Start(r.Context(), name, attrs...)
	sw := &spanWriter{ResponseWriter: w}
	serve(sw, r.WithContext(ctx))
	code := sw.code
	if code == "" && sw.status >= 500 {
		code = "internal"
	}
	telemetry.End(span, code)
}

// spanAttrs are the start options for a span about platform and flow.
func spanAttrs(platform, flow string) []trace.SpanStartOption {
	if flow == "" {
		return []trace.SpanStartOption{trace.WithAttributes(telemetry.AttrPlatform.String(platform))}
	}
	return []trace.SpanStartOption{trace.WithAttributes(telemetry.AttrPlatform.String(platform), telemetry.AttrFlow.String(flow))}
}
