package sandbox

import (
	"encoding/json"
	"net/http"
	"time"
)

// serveAdmin is the sandbox's own API under {base}/_sandbox:
//
//	GET  /_sandbox/stats              counters per platform
//	GET  /_sandbox/apps               the registered apps
//	PUT  /_sandbox/faults/<key>       set a fault (JSON Fault); DELETE clears
//	POST /_sandbox/clock?advance=24h  move the clock forward
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request, path string) {
	switch {
	case path == "/stats" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Stats())
	case path == "/apps" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Apps())
	case len(path) > len("/faults/") && path[:len("/faults/")] == "/faults/":
		key := path[len("/faults/"):]
		switch r.Method {
		case http.MethodPut, http.MethodPost:
			var f Fault
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&f); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid fault JSON"})
				return
			}
			s.SetFault(key, f)
			writeJSON(w, http.StatusOK, f)
		case http.MethodDelete:
			s.SetFault(key, Fault{})
			w.WriteHeader(http.StatusNoContent)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	case path == "/clock" && r.Method == http.MethodPost:
		d, err := time.ParseDuration(r.URL.Query().Get("advance"))
		if err != nil || d < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "advance must be a positive duration such as 24h"})
			return
		}
		s.clock.Advance(d)
		writeJSON(w, http.StatusOK, map[string]any{"now": s.clock.Now()})
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}
