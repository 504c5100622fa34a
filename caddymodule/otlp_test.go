package caddymodule

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/credgate/credgate/sandbox"
)

// otlpReceiver is an OTLP/HTTP endpoint for traces and metrics that
// decodes the protobuf it receives, as a collector would.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   map[string][]map[string]string // span name → each one's string attributes
	names   map[string]string              // span id → span name
	parents map[string]string              // span id → parent span id
	metrics map[string]bool                // metric names received
	raw     bytes.Buffer                   // every request body, decoded
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err == nil {
			body, _ = io.ReadAll(zr)
		}
	}
	if r.URL.Path == "/v1/metrics" {
		var req colmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		o.raw.Write(body)
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					o.metrics[m.Name] = true
				}
			}
		}
		o.mu.Unlock()
		out, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
		return
	}
	if r.URL.Path != "/v1/traces" {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.raw.Write(body)
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				attrs := map[string]string{}
				for _, a := range sp.Attributes {
					attrs[a.Key] = a.Value.GetStringValue()
				}
				o.spans[sp.Name] = append(o.spans[sp.Name], attrs)
				o.names[string(sp.SpanId)] = sp.Name
				o.parents[string(sp.SpanId)] = string(sp.ParentSpanId)
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Write(out)
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, spans leave the process over
// OTLP/HTTP and arrive decodable; and during a connect, a renewal, a token
// read and a disconnect, no span, metric or log line carries a token, a
// code, a verifier, the master key, a client secret or the service token.
func TestSpansArriveOverOTLPAndNothingLeaksASecret(t *testing.T) {
	recv := &otlpReceiver{spans: map[string][]map[string]string{}, names: map[string]string{},
		parents: map[string]string{}, metrics: map[string]bool{}}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	// Secrets go in as placeholders, as the README says: Caddy logs the
	// config as written at debug level. (The harness's admin token is a
	// literal, so it is not among the secrets checked below.)
	t.Setenv("CREDGATE_TEST_SERVICE_TOKEN", serviceToken)
	h := newHarness(t, harnessOptions{tokenAPI: "service_token {env.CREDGATE_TEST_SERVICE_TOKEN}", metrics: true,
		caddyGlobals:   "log {\n\t\toutput file " + logFile + "\n\t\tlevel DEBUG\n\t}",
		siteDirectives: "tracing {\n\t\tspan caddy.request\n\t}"})

	// Every secret the flows below handle, as the sandbox and credgate see them.
	providerURL, cookie := h.startFlow(alice, "twitter", "/settings")
	callbackURL := h.authorize(providerURL)
	if resp, body := h.callback(callbackURL, cookie, alice); resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	h.sandbox.Clock().Advance(117 * time.Minute)
	_, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if tok.AccessToken == "" {
		t.Fatalf("token: %s", body)
	}
	// A failed exchange, which credgate logs with the platform's error.
	h.sandbox.SetFault("twitter.token", sandbox.Fault{InvalidGrant: true})
	failedURL, failedCookie := h.startFlow(bob, "twitter", "/settings")
	failedCallback := h.authorize(failedURL)
	h.callback(failedCallback, failedCookie, bob)
	h.sandbox.SetFault("twitter.token", sandbox.Fault{})
	metrics := h.scrape()
	if resp, body := h.do("DELETE", "/api/credentials/twitter/disconnect", alice, map[string]string{"Origin": h.origin}); resp.StatusCode != http.StatusOK {
		t.Fatalf("disconnect: %d %s", resp.StatusCode, body)
	}
	secrets := map[string]string{
		"access token": tok.AccessToken, "code": queryParam(callbackURL, "code"), "state": queryParam(callbackURL, "state"),
		"binding cookie": cookie.Value, "master key": testKey(1), "client secret": "twitter-client-secret",
		"service token": serviceToken, "failed flow's code": queryParam(failedCallback, "code"),
	}
	// The refresh token and verifier never leave credgate and the sandbox;
	// the sandbox saw the refresh token credgate presented.
	caddy.Stop() // flushes the exporter
	waitUntil(t, 10*time.Second, func() bool {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		return recv.spans["credgate.refresh"] != nil
	})
	recv.mu.Lock()
	spans, raw := recv.spans, recv.raw.String()
	recv.mu.Unlock()
	for _, name := range []string{"credgate.oauth.start", "credgate.oauth.callback", "credgate.oauth.exchange",
		"credgate.oauth.profile", "credgate.vault.store", "credgate.token.read", "credgate.refresh", "credgate.disconnect"} {
		if spans[name] == nil {
			t.Errorf("span %s did not arrive over OTLP", name)
		}
	}
	// Caddy's tracing directive started the request span; credgate's
	// route spans are its children.
	recv.mu.Lock()
	var orphans []string
	for id, name := range recv.names {
		if name == "credgate.oauth.start" && recv.names[recv.parents[id]] != "caddy.request" {
			orphans = append(orphans, name)
		}
	}
	gotMetrics := recv.metrics["credgate_connections_total"] || recv.metrics["credgate_connections"]
	gotHealth := recv.metrics["credgate_responses_total"] || recv.metrics["credgate_responses"]
	recv.mu.Unlock()
	if len(orphans) > 0 {
		t.Errorf("%v are not children of Caddy's request span", orphans)
	}
	if !gotMetrics {
		t.Errorf("credgate_connections_total did not arrive over OTLP")
	}
	if !gotHealth {
		t.Errorf("credgate_responses_total (credgate's own health) did not arrive over OTLP")
	}
	outcomes := map[string]bool{}
	for _, a := range spans["credgate.oauth.callback"] {
		if a["credgate.platform"] == "twitter" {
			outcomes[a["credgate.outcome"]+"/"+a["error.type"]] = true
		}
	}
	if !outcomes["success/"] || !outcomes["failure/invalid_grant"] {
		t.Errorf("callback spans over the wire: %v", spans["credgate.oauth.callback"])
	}
	logs, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(logs), `"logger":"http.handlers.credgate"`) {
		t.Fatalf("no credgate log lines captured (%v): the check below would prove nothing", err)
	}
	for what, value := range secrets {
		if value == "" {
			t.Fatalf("no %s captured", what)
		}
		for place, text := range map[string]string{"spans": raw, "metrics": metrics, "logs": string(logs)} {
			if i := strings.Index(text, value); i >= 0 {
				t.Errorf("the %s is in the %s: …%s…", what, place, text[max(0, i-200):min(len(text), i+40)])
			}
		}
	}
}

func queryParam(raw, key string) string {
	_, q, _ := strings.Cut(strings.SplitN(raw, "#", 2)[0], "?")
	for _, kv := range strings.Split(q, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
