package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"context"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/credgate/credgate/telemetry"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"time"
)

// BenchmarkPassThrough isolates what the credgate handler adds to a
// request it does not own: the same request served by the next handler
// directly, and through credgate, in one run. bench/passthrough.sh
// measures the same thing end to end through Caddy.
func BenchmarkPassThrough(b *testing.B) {
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	h := &Handler{}
	for _, path := range []string{"/some/page", "/api/posts"} {
		r := httptest.NewRequest("GET", path, nil)
		w := httptest.NewRecorder()
		b.Run("direct"+path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				next.ServeHTTP(w, r)
			}
		})
		b.Run("credgate"+path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r, next)
			}
		})
	}
}

// BenchmarkConnectTelemetry compares whole connects (start, consent at
// the sandbox, callback, store) through a real Caddy with spans exported
// (an SDK provider with a batching exporter that discards) against the
// same with no export (the default), alternating rounds in one run.
// Metrics are recorded in both: they cannot be turned off.
//
//	go test -run XXX -bench ConnectTelemetry -benchtime 2000x ./caddymodule/
func BenchmarkConnectTelemetry(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	app, err := caddy.ActiveContext().App("credgate")
	if err != nil {
		b.Fatal(err)
	}
	on := telemetry.NewExport(sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter())))
	off := telemetry.NewExport(nil)
	b.Cleanup(func() { on.Shutdown(context.Background()) })
	const rounds = 10
	var spent [2]time.Duration
	perRound := max(b.N/(2*rounds), 1)
	b.ResetTimer()
	for round := range 2 * rounds {
		arm := round % 2
		app.(*App).setTracing([]*telemetry.Export{off, on}[arm])
		start := time.Now()
		for range perRound {
			h.connect(alice, "twitter")
		}
		spent[arm] += time.Since(start)
	}
	b.StopTimer()
	n := float64(perRound * rounds)
	b.ReportMetric(float64(spent[0].Microseconds())/n, "µs/connect-off")
	b.ReportMetric(float64(spent[1].Microseconds())/n, "µs/connect-on")
	b.ReportMetric(spent[1].Seconds()/spent[0].Seconds(), "on/off")
}
