package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
