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
