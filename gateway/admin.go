package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/credgate/credgate/answer"
	"github.com/credgate/credgate/guard"
)

// rolloutStatus: GET /api/credentials/rollout (admin), the same as
// `caddy credgate rollout status`, from this instance's view.
func (g *Gateway) rolloutStatus(w http.ResponseWriter, r *http.Request) {
	if !g.adminReady(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	window := guard.DefaultWindow
	if g.Guard != nil {
		window = g.Guard.Config().Window
	}
	status, err := guard.ReadRolloutStatus(ctx, g.DB, g.Rollout, window, g.platforms())
	if err != nil {
		answer.StoreError(g.Logger, w, r, "reading the rollout", err)
		return
	}
	if g.ExactPercentages != nil {
		g.ExactPercentages(ctx, status)
	}
	answer.JSON(w, http.StatusOK, map[string]any{"guard": g.Guard.Health(), "window": window.String(), "platforms": status})
}

// rolloutResume: POST /api/credentials/rollout/resume (admin) with
// {"platform": "twitter", "by": "alice"}: clears a halt, audited.
func (g *Gateway) rolloutResume(w http.ResponseWriter, r *http.Request) {
	if !g.adminReady(w, r) {
		return
	}
	var req struct {
		Platform string `json:"platform"`
		By       string `json:"by"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Platform == "" {
		answer.Error(w, http.StatusBadRequest, "invalid_request", `body must be JSON: {"platform": "<name>", "by": "<who>"}`)
		return
	}
	by := "admin-route"
	if req.By != "" {
		by = "admin-route: " + req.By
	}
	// A halt in the database is cleared whatever its platform (one left
	// from a provider since removed too); only with none is the name
	// checked, so a typo is not answered as "not halted".
	halt, err := guard.Resume(r.Context(), g.DB, req.Platform, by)
	switch {
	case errors.Is(err, guard.ErrNotHalted) && !slices.Contains(g.platforms(), req.Platform):
		answer.Error(w, http.StatusNotFound, "unknown_platform", fmt.Sprintf("no platform %q is configured (configured: %s)",
			req.Platform, strings.Join(g.platforms(), ", ")))
		return
	case errors.Is(err, guard.ErrNotHalted):
		answer.Error(w, http.StatusConflict, "not_halted", req.Platform+" is not halted")
		return
	case err != nil:
		answer.StoreError(g.Logger, w, r, "resuming the rollout", err)
		return
	}
	g.Logger.Warn("rollout resumed", zap.String("platform", req.Platform), zap.String("by", by), zap.String("halted_for", halt.Reason))
	answer.JSON(w, http.StatusOK, map[string]any{"resumed": req.Platform, "was_halted_at": halt.At.UTC().Format(time.RFC3339), "reason": halt.Reason})
}
