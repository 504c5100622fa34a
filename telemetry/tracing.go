package telemetry

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is credgate's own tracer provider: Caddy sets no global one,
// and credgate must not take the process's global from another module.
// Export is configured by the standard OTEL_* variables (through
// autoexport) and is off unless one of them asks for it; even then,
// spans join a request span that Caddy's tracing directive started.
type Tracing struct {
	provider *sdktrace.TracerProvider // nil when export is off
	tracer   trace.Tracer
}

// ScopeName is the instrumentation scope of credgate's spans.
const ScopeName = "github.com/credgate/credgate"

// exportConfigured reports whether the environment asks for trace export.
func exportConfigured() bool {
	if v := os.Getenv("OTEL_TRACES_EXPORTER"); v != "" {
		return v != "none"
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// TracingFromEnv builds the provider the OTEL_* variables describe, or a
// no-op one when they describe none.
func TracingFromEnv(ctx context.Context) (*Tracing, error) {
	if !exportConfigured() {
		return NewTracing(nil), nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("trace exporter from OTEL_* variables: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName("credgate")))
	if err != nil {
		res = resource.Default()
	}
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still win: the
	// default resource reads them.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	return NewTracing(sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))), nil
}

// NewTracing uses provider (nil: no export).
func NewTracing(provider *sdktrace.TracerProvider) *Tracing {
	t := &Tracing{provider: provider}
	if provider == nil {
		t.tracer = noop.NewTracerProvider().Tracer(ScopeName)
	} else {
		t.tracer = provider.Tracer(ScopeName)
	}
	return t
}

// Tracer is credgate's tracer.
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// Exporting reports whether spans leave the process.
func (t *Tracing) Exporting() bool { return t.provider != nil }

// Shutdown flushes and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// The span attributes credgate sets; values come from closed sets.
const (
	AttrPlatform      = attribute.Key("credgate.platform")
	AttrFlow          = attribute.Key("credgate.flow")
	AttrOutcome       = attribute.Key("credgate.outcome")
	AttrRolloutReason = attribute.Key("credgate.rollout.reason")
	AttrErrorType     = attribute.Key("error.type")
)

// End closes span with its outcome: success, or a failure with its
// stable error code as error.type and an error status. The code is a
// closed-set value, never an error message.
func End(span trace.Span, errorCode string) {
	if errorCode == "" {
		span.SetAttributes(AttrOutcome.String(Success))
	} else {
		span.SetAttributes(AttrOutcome.String(Failure), AttrErrorType.String(errorCode))
		span.SetStatus(codes.Error, errorCode)
	}
	span.End()
}
