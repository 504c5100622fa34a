package answer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/credgate/credgate/vault"
)

// Storage errors are answered by their kind: only an outage is a 503 and
// a "database unavailable" warning; a 500 carries an id its log line has.
func TestStoreErrorsAreClassifiedByKind(t *testing.T) {
	t.Parallel()
	_, refused := pgx.Connect(context.Background(), "postgres://u@127.0.0.1:1/x?connect_timeout=2")
	if _, ok := errors.AsType[*pgconn.ConnectError](refused); !ok {
		t.Fatalf("setup: %v", refused)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name       string
		err        error
		ctx        context.Context
		wantStatus int
		wantCode   string
		wantLevel  zapcore.Level
	}{
		{"refused connection", fmt.Errorf("reading: %w", refused), context.Background(), 503, "unavailable", zapcore.WarnLevel},
		{"version conflict", fmt.Errorf("saving: %w", vault.ErrVersionConflict), context.Background(), 409, "conflict", zapcore.InfoLevel},
		{"no rows", pgx.ErrNoRows, context.Background(), 500, "internal", zapcore.ErrorLevel},
		{"state not found", vault.ErrStateNotFound, context.Background(), 500, "internal", zapcore.ErrorLevel},
		{"validation", errors.New("platform name too long"), context.Background(), 500, "internal", zapcore.ErrorLevel},
		{"client cancelled", context.Canceled, cancelled, 499, "client_closed_request", zapcore.DebugLevel},
	} {
		core, logs := observer.New(zapcore.DebugLevel)
		w := httptest.NewRecorder()
		r := httptest.NewRequestWithContext(c.ctx, http.MethodGet, "/api/credentials/status", nil)
		StoreError(zap.New(core), w, r, "doing", c.err)
		var body struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != c.wantStatus || body.Error.Code != c.wantCode {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Body, c.wantStatus, c.wantCode)
			continue
		}
		entries := logs.All()
		if len(entries) != 1 || entries[0].Level != c.wantLevel {
			t.Errorf("%s: log %+v, want one %s line", c.name, entries, c.wantLevel)
			continue
		}
		if strings.Contains(entries[0].Message, "unavailable") != (c.wantStatus == 503) {
			t.Errorf("%s: log message %q", c.name, entries[0].Message)
		}
		if c.wantStatus == 500 {
			id, _ := entries[0].ContextMap()["error_id"].(string)
			if id == "" || !strings.Contains(body.Error.Message, id) {
				t.Errorf("%s: body %q and log id %q do not match", c.name, body.Error.Message, id)
			}
		}
	}
}

// With a ServerErrors beneath the Recorder, the first 5xx is taken, not
// written, and still counted as the 5xx it is; a 4xx, and any 5xx after
// the first, are written as usual.
func TestAServerErrorIsTakenNotWritten(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	se := &ServerErrors{ResponseWriter: w}
	rec := &Recorder{ResponseWriter: se}
	rec.Header().Set("Retry-After", "30")
	Error(rec, http.StatusServiceUnavailable, "unavailable", "credential storage is temporarily unavailable")
	if w.Body.Len() != 0 || w.Code != http.StatusOK || w.Header().Get("Content-Type") != "" {
		t.Fatalf("the 5xx was written: %d %q", w.Code, w.Body)
	}
	if se.Taken == nil || se.Taken.Status != 503 || se.Taken.Error() != "unavailable: credential storage is temporarily unavailable" {
		t.Fatalf("taken: %+v", se.Taken)
	}
	if rec.status != 503 || rec.code != "unavailable" || w.Header().Get("Retry-After") != "30" {
		t.Errorf("the recorder saw status %d code %q; Retry-After %q", rec.status, rec.code, w.Header().Get("Retry-After"))
	}
	Error(rec, http.StatusInternalServerError, "internal", "second")
	if se.Taken.Code != "unavailable" || !strings.Contains(w.Body.String(), `"internal"`) {
		t.Errorf("a second 5xx: taken %+v, written %q", se.Taken, w.Body)
	}

	w = httptest.NewRecorder()
	se = &ServerErrors{ResponseWriter: w}
	Error(&Recorder{ResponseWriter: se}, http.StatusNotFound, "unknown_platform", "no such platform")
	if se.Taken != nil || w.Code != 404 || !strings.Contains(w.Body.String(), "unknown_platform") {
		t.Errorf("a 4xx: taken %+v, written %d %q", se.Taken, w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	Error(&Recorder{ResponseWriter: w}, http.StatusBadGateway, "provider_unavailable", "the platform did not answer")
	if w.Code != 502 || !strings.Contains(w.Body.String(), "provider_unavailable") {
		t.Errorf("without a ServerErrors: %d %q", w.Code, w.Body)
	}
}
