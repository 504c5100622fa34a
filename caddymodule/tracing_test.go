package caddymodule

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/credgate/credgate/sandbox"
	"github.com/credgate/credgate/telemetry"
)

// tracedHarness is a harness whose credgate app exports spans to memory.
func tracedHarness(t *testing.T, opt harnessOptions) (*harness, *tracetest.InMemoryExporter) {
	h := newHarness(t, opt)
	exp := tracetest.NewInMemoryExporter()
	currentApp(t).setTracing(telemetry.NewExport(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))))
	return h, exp
}

func spansNamed(spans tracetest.SpanStubs, name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// A connect yields the span tree start, callback ⊃ exchange, profile,
// store; failures carry their stable code as error.type and an error
// status; the audit row names the callback's trace.
func TestSpansOfAConnectAndItsFailures(t *testing.T) {
	h, exp := tracedHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken, legacyRedirect: true})
	h.connect(alice, "twitter")
	spans := exp.GetSpans()
	start, callback := spansNamed(spans, "credgate.oauth.start"), spansNamed(spans, "credgate.oauth.callback")
	if len(start) != 1 || len(callback) != 1 {
		t.Fatalf("spans: %v", names(spans))
	}
	cb := callback[0]
	for _, s := range []tracetest.SpanStub{start[0], cb} {
		if attr(s, "credgate.platform") != "twitter" || attr(s, "credgate.flow") != "new" || attr(s, "credgate.outcome") != "success" || s.Status.Code == codes.Error {
			t.Errorf("%s: %v %v", s.Name, s.Attributes, s.Status)
		}
	}
	for _, child := range []string{"credgate.oauth.exchange", "credgate.oauth.profile", "credgate.vault.store"} {
		c := spansNamed(spans, child)
		if len(c) != 1 || c[0].Parent.SpanID() != cb.SpanContext.SpanID() || attr(c[0], "credgate.outcome") != "success" {
			t.Errorf("%s: %d spans, want one child of the callback", child, len(c))
		}
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'connect' AND trace_id = $1`, cb.SpanContext.TraceID().String()); n != 1 {
		t.Errorf("the connect audit row does not carry the callback's trace id")
	}

	// Failure classes: the user says no; the platform refuses the code;
	// a state nobody issued.
	exp.Reset()
	providerURL, cookie := h.startFlow(bob, "twitter", "/settings")
	u, _ := url.Parse(providerURL)
	h.callback(h.origin+"/api/auth/oauth/twitter/callback?error=access_denied&state="+url.QueryEscape(u.Query().Get("state")), cookie, bob)
	h.sandbox.SetFault("twitter.token", sandbox.Fault{InvalidGrant: true})
	providerURL, cookie = h.startFlow(bob, "twitter", "/settings")
	h.callback(h.authorize(providerURL), cookie, bob)
	h.sandbox.SetFault("twitter.token", sandbox.Fault{})
	h.do("GET", "/api/auth/oauth/twitter/callback?code=x&state=cg1.forged.mac", "", nil)
	// A platform nobody configured is not a label value: the path is the
	// client's to choose.
	h.do("GET", "/api/auth/oauth/attacker-chosen-value", alice, nil)
	for _, s := range exp.GetSpans() {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.Emit(), "attacker-chosen-value") {
				t.Errorf("span %s carries %s=%s", s.Name, a.Key, a.Value.Emit())
			}
		}
	}
	var codesSeen []string
	for _, s := range spansNamed(exp.GetSpans(), "credgate.oauth.callback") {
		if s.Status.Code != codes.Error || attr(s, "credgate.outcome") != "failure" {
			t.Errorf("failed callback span: %v %v", s.Attributes, s.Status)
		}
		codesSeen = append(codesSeen, attr(s, "error.type"))
	}
	if strings.Join(codesSeen, ",") != "access_denied,invalid_grant,invalid_state" {
		t.Errorf("callback error types %v, want access_denied, invalid_grant, invalid_state", codesSeen)
	}
	if ex := spansNamed(exp.GetSpans(), "credgate.oauth.exchange"); len(ex) != 1 || attr(ex[0], "error.type") != "invalid_grant" {
		t.Errorf("exchange spans: %v", ex)
	}

	// The legacy arm as observed, a token read, a renewal.
	exp.Reset()
	h.do("GET", "/api/twitter/callback?code=c&state=app-state&stub_status=500", "", nil)
	h.sandbox.Clock().Advance(117 * time.Minute)
	if code, _, body := h.fetchToken(h.internal, alice, "twitter", serviceToken); code != http.StatusOK {
		t.Fatalf("token: %d %s", code, body)
	}
	spans = exp.GetSpans()
	if l := spansNamed(spans, "credgate.legacy.callback"); len(l) != 1 || attr(l[0], "credgate.flow") != "legacy" || attr(l[0], "error.type") != "http_5xx" {
		t.Errorf("legacy callback span: %v", l)
	}
	read, refresh := spansNamed(spans, "credgate.token.read"), spansNamed(spans, "credgate.refresh")
	if len(read) != 1 || len(refresh) != 1 || refresh[0].Parent.SpanID() != read[0].SpanContext.SpanID() || attr(refresh[0], "credgate.outcome") != "success" {
		t.Errorf("token read %d and refresh %d spans, want a refresh inside the read: %v", len(read), len(refresh), names(spans))
	}
	if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'refresh' AND trace_id = $1`, refresh[0].SpanContext.TraceID().String()); n != 1 {
		t.Error("the refresh audit row does not carry its trace id")
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
