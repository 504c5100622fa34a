package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"

	promBridge "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Export is credgate's own OpenTelemetry tracer and meter providers:
// Caddy sets no global ones, and credgate must not take the process's
// globals from another module. Export is configured by the standard
// OTEL_* variables and is off unless one of them asks for it; spans join
// a request span that Caddy's tracing directive started either way.
type Export struct {
	provider *sdktrace.TracerProvider // nil when trace export is off
	meters   *sdkmetric.MeterProvider // nil when metric export is off
	tracer   trace.Tracer
}

// ScopeName is the instrumentation scope of credgate's spans.
const ScopeName = "github.com/credgate/credgate"

// configured reports whether the environment asks for a signal's export:
// its OTEL_<SIGNAL>_EXPORTER, else an OTLP endpoint for it.
func configured(signal string) bool {
	if v := os.Getenv("OTEL_" + signal + "_EXPORTER"); v != "" {
		return v != "none"
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}

// ExportFromEnv builds the providers the OTEL_* variables describe:
// spans through autoexport (otlp, console …), and metrics over OTLP
// (http/protobuf or grpc), read from metrics — the same series Caddy's
// /metrics shows. Without such variables nothing is exported.
func ExportFromEnv(ctx context.Context, metrics *Metrics) (*Export, error) {
	res := serviceResource(ctx)
	var tp *sdktrace.TracerProvider
	if configured("TRACES") {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("trace exporter from OTEL_* variables: %w", err)
		}
		tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	}
	e := NewExport(tp)
	if configured("METRICS") && metrics != nil {
		reader, err := otlpMetricReader(ctx, metrics)
		if err != nil {
			e.Shutdown(ctx)
			return nil, err
		}
		e.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res))
	}
	return e, nil
}

// otlpMetricReader exports metrics' Prometheus series over OTLP through
// the Prometheus bridge, so both ways of exporting show the same numbers.
func otlpMetricReader(ctx context.Context, metrics *Metrics) (sdkmetric.Reader, error) {
	if v := os.Getenv("OTEL_METRICS_EXPORTER"); v != "" && v != "otlp" {
		return nil, fmt.Errorf("OTEL_METRICS_EXPORTER=%q: credgate exports metrics over otlp only (they are on Caddy's /metrics too)", v)
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdkmetric.Exporter
	var err error
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlpmetrichttp.New(ctx)
	case "grpc":
		exp, err = otlpmetricgrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("metric exporter from OTEL_* variables: %w", err)
	}
	producer := promBridge.NewMetricProducer(promBridge.WithGatherer(metrics.registry))
	return sdkmetric.NewPeriodicReader(exp, sdkmetric.WithProducer(producer)), nil
}

// serviceResource names the service credgate unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise.
func serviceResource(ctx context.Context) *resource.Resource {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName("credgate")))
	if err != nil {
		res = resource.Default()
	}
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	return res
}

// NewExport uses provider for spans (nil: none) and exports no metrics.
func NewExport(provider *sdktrace.TracerProvider) *Export {
	t := &Export{provider: provider}
	if provider == nil {
		t.tracer = noop.NewTracerProvider().Tracer(ScopeName)
	} else {
		t.tracer = provider.Tracer(ScopeName)
	}
	return t
}

// Tracer is credgate's tracer.
func (t *Export) Tracer() trace.Tracer { return t.tracer }

// Shutdown flushes and stops the providers.
func (t *Export) Shutdown(ctx context.Context) error {
	var errs []error
	if t.provider != nil {
		errs = append(errs, t.provider.Shutdown(ctx))
	}
	if t.meters != nil {
		errs = append(errs, t.meters.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// The span attributes credgate sets; values come from closed sets.
const (
	AttrPlatform      = attribute.Key("credgate.platform")
	AttrFlow          = attribute.Key("credgate.flow")
	AttrOutcome       = attribute.Key("credgate.outcome")
	AttrRolloutReason = attribute.Key("credgate.rollout.reason")
	// AttrIdentity is the identity result at the connect route (ok,
	// refreshed, or why no user was recognised).
	AttrIdentity  = attribute.Key("credgate.identity")
	AttrErrorType = attribute.Key("error.type")
	// AttrLegacyCounted: the app's callback belonged to a flow credgate
	// saw begin, and its outcome was counted.
	AttrLegacyCounted = attribute.Key("credgate.legacy.counted")
)

// SpanAttrs are the start options that name a span's platform and, when
// known, its flow: nothing without a platform.
func SpanAttrs(platform, flow string) []trace.SpanStartOption {
	if platform == "" {
		return nil
	}
	if flow == "" {
		return []trace.SpanStartOption{trace.WithAttributes(AttrPlatform.String(platform))}
	}
	return []trace.SpanStartOption{trace.WithAttributes(AttrPlatform.String(platform), AttrFlow.String(flow))}
}

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
