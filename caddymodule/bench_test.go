package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/telemetry"
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
	h := &Handler{gw: &gateway.Gateway{}}
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

// BenchmarkEgress compares API calls through the egress proxy against
// the same calls through a plain reverse_proxy to the sandbox with the
// token already in the header, in alternating rounds of one run:
// requests/s and p99, as egress/direct ratios (target ≥ 0.9× and ≤ 1.2×).
//
//	go test -run XXX -bench Egress -benchtime 1x ./caddymodule/
func BenchmarkEgress(b *testing.B) {
	h := newHarness(b, harnessOptions{egress: "service_token " + serviceToken, tokenAPI: "service_token " + serviceToken})
	h.connect(alice, "twitter")
	code, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK {
		b.Fatalf("token: %d %s", code, body)
	}
	direct := fmt.Sprintf("http://127.0.0.1:%d", freePort(b))
	h.opt.extraSites = fmt.Sprintf("\n%s {\n\treverse_proxy %s {\n\t\theader_up Authorization \"Bearer %s\"\n\t\theader_up Host {upstream_hostport}\n\t}\n}\n",
		direct, strings.TrimPrefix(h.sbURL, "http://"), tok.AccessToken)
	h.load("")

	const conns, round = 16, 2 * time.Second
	run := func(url string, headers map[string]string) (rps float64, p99 time.Duration) {
		var mu sync.Mutex
		var lat []time.Duration
		deadline := time.Now().Add(round)
		var wg sync.WaitGroup
		for range conns {
			wg.Go(func() {
				var mine []time.Duration
				for time.Now().Before(deadline) {
					req, _ := http.NewRequest("GET", url, nil)
					for k, v := range headers {
						req.Header.Set(k, v)
					}
					start := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("%s: %d", url, resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		slices.Sort(lat)
		return float64(len(lat)) / round.Seconds(), lat[len(lat)*99/100]
	}
	var egressRPS, directRPS []float64
	var egressP99, directP99 []time.Duration
	for b.Loop() {
		for range 3 {
			r, p := run(h.egress+"/twitter/2/users/me", map[string]string{"Authorization": "Bearer " + serviceToken, "X-Credgate-User": alice})
			egressRPS, egressP99 = append(egressRPS, r), append(egressP99, p)
			r, p = run(direct+"/twitter/2/users/me", nil)
			directRPS, directP99 = append(directRPS, r), append(directP99, p)
		}
	}
	median := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	medianD := func(v []time.Duration) time.Duration { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(median(egressRPS)/median(directRPS), "rps-egress/direct")
	b.ReportMetric(float64(medianD(egressP99))/float64(medianD(directP99)), "p99-egress/direct")
	b.ReportMetric(median(egressRPS), "rps-egress")
	b.ReportMetric(median(directRPS), "rps-direct")
}

// BenchmarkConnectFlows runs whole connects (start, consent at the
// in-process sandbox, callback, store) from 8 concurrent clients for 3 s
// and reports flows per second. TestRoundTripsPerConnect counts the
// database round trips of one.
//
//	go test -run XXX -bench ConnectFlows -benchtime 1x ./caddymodule/
func BenchmarkConnectFlows(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	const workers, span = 8, 3 * time.Second
	for b.Loop() {
		var flows atomic.Int64
		deadline := time.Now().Add(span)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := 0; time.Now().Before(deadline); i++ {
					user := fmt.Sprintf("00000000-0000-4000-8000-%06d%06d", w, i)
					if loc := h.connect(user, "twitter"); !strings.Contains(loc, "connected=twitter") {
						b.Errorf("connect: %s", loc)
						return
					}
					flows.Add(1)
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(flows.Load())/span.Seconds(), "flows/s")
	}
}
