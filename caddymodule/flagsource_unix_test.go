//go:build unix

package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A named pipe at the flag path, through a real Caddy: service-health's
// flag source turns to error naming it, everyone goes to the legacy
// flow, and a good file put back applies with no reload. Before, the
// poll blocked on the pipe for good: service-health stayed ready and no
// rollback applied again (issue 26, item 4).
func TestServiceHealthReportsANamedPipeAtTheFlagPath(t *testing.T) {
	h, path := newLegacyHarness(t, true, 25, "")
	health := func() (int, map[string]any) {
		resp, body := h.do("GET", "/api/credentials/service-health", "", map[string]string{"Authorization": "Bearer " + adminToken})
		var out struct {
			Flags map[string]any `json:"flags"`
		}
		json.Unmarshal(body, &out)
		return resp.StatusCode, out.Flags
	}
	moved := userInBucket(0, 20)
	waitUntil(t, 5*time.Second, func() bool { _, f := health(); return f["state"] == "ready" })
	if !h.legacyStartIsNew(moved, "twitter") {
		t.Fatal("at 25 %, a user in bucket 0-20 is not on the new flow")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, func() bool { _, f := health(); return f["state"] == "error" })
	if code, f := health(); code != http.StatusServiceUnavailable || f["ok"] != false || !strings.Contains(fmt.Sprint(f["error"]), "is a named pipe, not a regular file") {
		t.Fatalf("a named pipe at the flag path: %d %v", code, f)
	}
	waitUntil(t, 5*time.Second, func() bool { return !h.legacyStartIsNew(moved, "twitter") })

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	setRollout(t, path, true, 25)
	waitUntil(t, 5*time.Second, func() bool { _, f := health(); return f["state"] == "ready" })
	waitUntil(t, 5*time.Second, func() bool { return h.legacyStartIsNew(moved, "twitter") })
}
