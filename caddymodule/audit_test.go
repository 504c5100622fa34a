package caddymodule

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/google/uuid"
)

// flushReadAudit writes the token reads counted so far, as the end of a
// window does.
func (h *harness) flushReadAudit() {
	h.t.Helper()
	app, err := caddy.ActiveContext().App("credgate")
	if err != nil {
		h.t.Fatal(err)
	}
	a := app.(*App)
	if err := a.readAudit.Flush(context.Background(), a.pool); err != nil {
		h.t.Fatal(err)
	}
}

// paced sends n requests built by req at rate per second, each on its own
// goroutine, and returns how many answered each status.
func paced(t *testing.T, n, rate int, req func(i int) *http.Request) map[int]int64 {
	t.Helper()
	var mu sync.Mutex
	got := map[int]int64{}
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
		wg.Go(func() {
			resp, err := client.Do(req(i))
			if err != nil {
				failed.Add(1)
				return
			}
			resp.Body.Close()
			mu.Lock()
			got[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d requests got no answer", f, n)
	}
	return got
}

// One client reading a token 200 times a second for 3 s, plus reads for
// ids that never connected and egress calls, adds a handful of audit rows
// whose events add up to exactly the reads made; the last window is
// written when the instance stops (issue 25: one client at 193 reads/s
// wrote about 6 GB of audit rows a day, a row per read).
func TestTokenReadsAreAuditedOncePerWindow(t *testing.T) {
	for _, tc := range []struct {
		window  string
		maxRows int // the connected account's token_api rows
	}{
		{"1m", 1},
		// 3 s of reads: 3 or 4 windows, and the one written at stop.
		{"1s", 5},
	} {
		t.Run(tc.window, func(t *testing.T) {
			h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken, egress: "service_token " + serviceToken,
				globalOptions: "audit_read_window " + tc.window})
			h.connect(alice, "twitter")
			auditBefore := h.count(`SELECT count(*) FROM credential_audit_log`)

			const reads, rate = 600, 200
			unknown := make([]string, 100)
			for i := range unknown {
				unknown[i] = uuid.NewString()
			}
			began := time.Now()
			answers := paced(t, reads+len(unknown), rate, func(i int) *http.Request {
				// Every seventh read asks for an id nobody connected.
				user := alice
				if i%7 == 6 {
					user = unknown[i/7]
				}
				req, _ := http.NewRequest("GET", h.internal+"/api/internal/credentials/"+user+"/twitter/token", nil)
				req.Header.Set("Authorization", "Bearer "+serviceToken)
				return req
			})
			elapsed := time.Since(began)
			for range 20 {
				if code, body := h.egressCall("GET", "/twitter/2/users/me", alice, serviceToken, ""); code != 200 {
					t.Fatalf("egress: %d %s", code, body)
				}
			}
			if answers[http.StatusOK]+answers[http.StatusNotFound] != reads+int64(len(unknown)) {
				t.Fatalf("answers %v, want only 200 and 404", answers)
			}

			// The last window is written when the instance stops.
			if err := caddy.Stop(); err != nil {
				t.Fatal(err)
			}
			rows := h.count(`SELECT count(*) FROM credential_audit_log`) - auditBefore
			t.Logf("window %s: %d token API reads and 20 egress calls in %v wrote %d audit rows", tc.window, reads+len(unknown), elapsed.Round(time.Millisecond), rows)

			type sum struct{ rows, events int }
			read := func(where string, args ...any) sum {
				var s sum
				s.rows = h.count(`SELECT count(*) FROM credential_audit_log WHERE action = 'token_read' AND `+where, args...)
				s.events = h.count(`SELECT coalesce(sum(events), 0)::int FROM credential_audit_log WHERE action = 'token_read' AND `+where, args...)
				return s
			}
			ok := read(`user_id = $1 AND details->>'via' = 'token_api' AND status = 'success'`, alice)
			if ok.events != int(answers[http.StatusOK]) || ok.rows < 1 || ok.rows > tc.maxRows {
				t.Errorf("alice's token API reads: %d rows with %d events, want 1 to %d rows with the %d reads answered 200",
					ok.rows, ok.events, tc.maxRows, answers[http.StatusOK])
			}
			anon := read(`user_id IS NULL AND status = 'failed' AND error_code = 'not_connected'`)
			if anon.events != int(answers[http.StatusNotFound]) || anon.rows < 1 || anon.rows > tc.maxRows {
				t.Errorf("reads for ids with no account: %d rows with %d events, want 1 to %d rows with the %d reads answered 404",
					anon.rows, anon.events, tc.maxRows, answers[http.StatusNotFound])
			}
			if n := h.count(`SELECT count(*) FROM credential_audit_log WHERE user_id = ANY($1::uuid[])`, unknown); n != 0 {
				t.Errorf("%d audit rows name an id that has no account", n)
			}
			egress := read(`user_id = $1 AND details->>'via' = 'egress' AND status = 'success'`, alice)
			if egress.events != 20 || egress.rows != 1 {
				t.Errorf("egress calls: %d rows with %d events, want 1 row with 20", egress.rows, egress.events)
			}
			if other := rows - ok.rows - anon.rows - egress.rows; other != 0 {
				t.Errorf("%d more audit rows than the token reads' (a renewal?)", other)
			}
		})
	}
}

// audit_read_window is from 1s to 1h: a shorter window writes a row per
// account a second, a longer one holds more counts that a crash loses.
func TestProvisionRefusesAnAuditReadWindowOutOfRange(t *testing.T) {
	t.Parallel()
	for _, w := range []time.Duration{500 * time.Millisecond, 2 * time.Hour} {
		app := &App{DatabaseURL: "postgres://x/y", MasterKey: testKey(1), AuditReadWindow: caddy.Duration(w)}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		err := app.Provision(ctx)
		cancel()
		app.Cleanup()
		if err == nil || !strings.Contains(err.Error(), "audit_read_window must be from 1s to 1h") {
			t.Errorf("audit_read_window %v: %v", w, err)
		}
	}
}
