package answer

import (
	"net/http"

	"go.opentelemetry.io/otel/trace"

	"github.com/credgate/credgate/telemetry"
)

// Recorder remembers the status a credgate answer carried and its stable
// error code (Error, or an oauth_error Redirect), for its route's span
// and count.
type Recorder struct {
	http.ResponseWriter
	code   string
	status int
}

func (s *Recorder) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection beneath.
func (s *Recorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// NoteCode records code on w's span, if w is a Recorder.
func NoteCode(w http.ResponseWriter, code string) {
	if sw, ok := w.(*Recorder); ok {
		sw.code = code
	}
}

// Tracker serves credgate's routes inside spans and counts their answers
// by route and status class (credgate_responses_total), and a blob that
// did not open by where (credgate_decrypt_failures_total).
type Tracker struct {
	Tracer trace.Tracer
	Health *telemetry.Health
	// Route names the route label (telemetry.Routes) of an answer given
	// in the span named span to a request for path.
	Route func(span, path string) string
}

// Traced serves a route inside a span named name, a child of the request
// span when one was started before (Caddy's tracing directive), and ends
// it with the route's outcome.
func (t Tracker) Traced(w http.ResponseWriter, r *http.Request, name string, attrs []trace.SpanStartOption, serve func(http.ResponseWriter, *http.Request)) {
	ctx, span := t.Tracer.Start(r.Context(), name, attrs...)
	sw := &Recorder{ResponseWriter: w}
	// Deferred, so that a panic in serve (recovered by the server) still
	// ends the span and counts as the 500 the server answers.
	defer func() {
		p := recover()
		code := sw.code
		if code == "" && (sw.status >= 500 || p != nil) {
			code = "internal"
		}
		telemetry.End(span, code)
		t.count(t.Route(name, r.URL.Path), sw, p != nil)
		if p != nil {
			panic(p) // the server's own recovery answers it
		}
	}()
	serve(sw, r.WithContext(ctx))
}

// count counts the answer sw carried on route. A panic is the 500 the
// server answers for it. On the egress route an answer without a code of
// credgate's is the platform's, passed through.
func (t Tracker) count(route string, sw *Recorder, panicked bool) {
	status := sw.status
	if panicked {
		status = http.StatusInternalServerError
	}
	class := telemetry.StatusClass(status)
	if route == telemetry.RouteEgress && sw.code == "" && !panicked {
		class = telemetry.StatusProxied
	}
	t.Health.Response(route, class)
	if sw.code == "decrypt_failed" {
		switch route {
		case telemetry.RouteToken:
			t.Health.DecryptFailed(telemetry.ViaTokenAPI)
		case telemetry.RouteEgress:
			t.Health.DecryptFailed(telemetry.ViaEgress)
		}
	}
}

// Early counts the refusals a route gives before its traced part (a
// missing service token, a malformed path, storage down): the token API
// and egress check their request before they open a span, and those
// answers count on their route like any other.
type Early struct {
	tracker Tracker
	route   string
	sw      *Recorder
	handed  bool
}

// Early wraps w for route's early answers; defer Done, write through
// Writer, and hand over to the traced part with Traced.
func (t Tracker) Early(w http.ResponseWriter, route string) *Early {
	return &Early{tracker: t, route: route, sw: &Recorder{ResponseWriter: w}}
}

// Writer is where the early answers are written.
func (e *Early) Writer() http.ResponseWriter { return e.sw }

// Traced runs the route's traced part, which counts its own answer.
func (e *Early) Traced(r *http.Request, name string, attrs []trace.SpanStartOption, serve func(http.ResponseWriter, *http.Request)) {
	e.handed = true
	e.tracker.Traced(e.sw.ResponseWriter, r, name, attrs, serve)
}

// Done counts the answer when the traced part never ran.
func (e *Early) Done() {
	if !e.handed && e.sw.status != 0 {
		e.tracker.count(e.route, e.sw, false)
	}
}
