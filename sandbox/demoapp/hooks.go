package demoapp

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"

	"github.com/credgate/credgate/webhook"
)

// maxHookBody bounds a delivery's body; credgate's are far smaller.
const maxHookBody = 1 << 20

// receive: POST HookPath, one delivery. Only a delivery whose signature
// webhook.Verify accepts is kept (401 otherwise, so credgate retries a
// delivery signed with a secret the app does not know yet, and a
// forger learns nothing); a repeat of an event already kept (delivery
// is at least once) is acknowledged and counted, not listed twice.
func (a *App) receive(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHookBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the body is too large")
		return
	}
	// The raw bytes, before any decoding: re-encoded JSON would not match.
	if err := webhook.Verify(r.Header, body, []byte(a.hookKey.Reveal()), a.now(), 0); err != nil {
		code := "bad_signature"
		if errors.Is(err, webhook.ErrStale) {
			code = "stale_timestamp"
		}
		writeError(w, http.StatusUnauthorized, code, "the delivery's signature does not verify")
		return
	}
	var e Event
	if err := json.Unmarshal(body, &e); err != nil || e.ID == "" || e.Type == "" {
		writeError(w, http.StatusBadRequest, "invalid_event", "the body is not an event")
		return
	}
	a.keep(e)
	writeJSON(w, http.StatusOK, map[string]any{"received": e.ID})
}

// keep records a verified event, or one more delivery of it.
func (a *App) keep(e Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.events {
		if a.events[i].ID == e.ID {
			a.events[i].Deliveries++
			return
		}
	}
	e.ReceivedAt, e.Deliveries = a.now().UTC(), 1
	a.events = append(a.events, e)
	if len(a.events) > maxEvents {
		a.events = slices.Delete(a.events, 0, len(a.events)-maxEvents)
	}
}

// Events are the events received about user's accounts, newest first.
func (a *App) Events(user string) []Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []Event{}
	for i := len(a.events) - 1; i >= 0; i-- {
		if a.events[i].UserID == user {
			out = append(out, a.events[i])
		}
	}
	return out
}

// listEvents: GET EventsPath, {"events":[…]} for the signed-in user.
func (a *App) listEvents(w http.ResponseWriter, r *http.Request) {
	user := a.user(r)
	if user == "" {
		writeError(w, http.StatusUnauthorized, "unauthenticated", "sign in first")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": a.Events(user)})
}
