package caddymodule

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"

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
// it with the route's outcome; the answer is counted by route and status
// class (credgate_responses_total), and a blob that did not open by
// where (credgate_decrypt_failures_total).
func (a *App) traced(w http.ResponseWriter, r *http.Request, name string, attrs []trace.SpanStartOption, serve func(http.ResponseWriter, *http.Request)) {
	ctx, span := a.tracer().Start(r.Context(), name, attrs...)
	sw := &spanWriter{ResponseWriter: w}
	// Deferred, so that a panic in serve (recovered by Caddy) still ends
	// the span and counts as the 500 Caddy answers.
	defer func() {
		p := recover()
		code := sw.code
		if code == "" && (sw.status >= 500 || p != nil) {
			code = "internal"
		}
		telemetry.End(span, code)
		a.countAnswer(routeLabel(name, r.URL.Path), sw, p != nil)
		if p != nil {
			panic(p) // Caddy's own recovery answers it
		}
	}()
	serve(sw, r.WithContext(ctx))
}

// countAnswer counts the answer sw carried on route. A panic is the 500
// Caddy answers for it. On the egress route an answer without a code of
// credgate's is the platform's, passed through.
func (a *App) countAnswer(route string, sw *spanWriter, panicked bool) {
	status := sw.status
	if panicked {
		status = http.StatusInternalServerError
	}
	class := telemetry.StatusClass(status)
	if route == telemetry.RouteEgress && sw.code == "" && !panicked {
		class = telemetry.StatusProxied
	}
	a.health.Response(route, class)
	if sw.code == "decrypt_failed" {
		switch route {
		case telemetry.RouteToken:
			a.health.DecryptFailed(telemetry.ViaTokenAPI)
		case telemetry.RouteEgress:
			a.health.DecryptFailed(telemetry.ViaEgress)
		}
	}
}

// earlyAnswer counts the refusals a route gives before its traced part
// (a missing service token, a malformed path, storage down): the token
// API and egress check their request before they open a span, and those
// answers count on their route like any other.
type earlyAnswer struct {
	app    *App
	route  string
	sw     *spanWriter
	handed bool
}

// early wraps w for route's early answers; defer done, write through
// Writer, and hand over to the traced part with traced.
func (a *App) early(w http.ResponseWriter, route string) *earlyAnswer {
	return &earlyAnswer{app: a, route: route, sw: &spanWriter{ResponseWriter: w}}
}

func (e *earlyAnswer) Writer() http.ResponseWriter { return e.sw }

// traced runs the route's traced part, which counts its own answer.
func (e *earlyAnswer) traced(r *http.Request, name string, attrs []trace.SpanStartOption, serve func(http.ResponseWriter, *http.Request)) {
	e.handed = true
	e.app.traced(e.sw.ResponseWriter, r, name, attrs, serve)
}

// done counts the answer when the traced part never ran.
func (e *earlyAnswer) done() {
	if !e.handed && e.sw.status != 0 {
		e.app.countAnswer(e.route, e.sw, false)
	}
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
	if strings.HasPrefix(path, rolloutDecisionPrefix) {
		return telemetry.RouteRolloutDecision
	}
	return telemetry.RouteOther
}
