package caddymodule

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/telemetry"
)

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

// answers counts the answers of credgate's routes on their spans and
// route labels.
func (a *App) answers() answer.Tracker {
	return answer.Tracker{Tracer: a.tracer(), Health: a.health, Route: routeLabel}
}

// routeLabel is the route label (telemetry.Routes) of an answer in the
// span named span: the span says which route, except credgate.api, whose
// path does (the paths of Handler.route).
func routeLabel(span, path string) string {
	switch span {
	case "credgate.oauth.start":
		return telemetry.RouteStart
	case "credgate.oauth.callback":
		return telemetry.RouteCallback
	case "credgate.disconnect":
		return telemetry.RouteDisconnect
	case "credgate.token.read":
		return telemetry.RouteToken
	case "credgate.egress":
		return telemetry.RouteEgress
	}
	switch path {
	case "/api/credentials/status":
		return telemetry.RouteStatus
	case "/api/credentials/health-check":
		return telemetry.RouteHealthCheck
	case "/api/credentials/service-health":
		return telemetry.RouteServiceHealth
	case "/api/maintenance/cleanup":
		return telemetry.RouteCleanup
	case "/api/credentials/rollout":
		return telemetry.RouteRollout
	case "/api/credentials/rollout/resume":
		return telemetry.RouteRolloutResume
	}
	if strings.HasPrefix(path, gateway.RolloutDecisionPrefix) {
		return telemetry.RouteRolloutDecision
	}
	return telemetry.RouteOther
}
