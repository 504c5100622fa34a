package guard

// Health is the guard's part of service-health; a nil Guard (the guard
// is off) says so. A halt does not make the instance unhealthy: it is the
// guard doing its job, and a load balancer must not take the instance out
// for it.
func (g *Guard) Health() map[string]any {
	if g == nil {
		return map[string]any{"enabled": false}
	}
	cfg := g.Config()
	out := map[string]any{"enabled": true, "min_success": cfg.MinSuccess, "max_gap": cfg.MaxGap,
		"min_samples": cfg.MinSamples, "window": cfg.Window.String(), "loaded": g.Loaded()}
	platforms := map[string]any{}
	var halted []string
	for _, p := range g.Platforms() {
		platforms[p.Name] = p
		if p.Halted() {
			halted = append(halted, p.Name)
		}
	}
	out["platforms"], out["halted"] = platforms, halted
	return out
}
