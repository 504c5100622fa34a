package caddymodule

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
)

// The secrets the example (examples/sandbox.Caddyfile), the README and
// `make demo` publish, by the option that takes them. Anyone can read
// them: with one of them, anyone can forge a session for any user (the
// JWT secret), use the admin routes, or read every token (the service
// token). credgate refuses to start with one of them, or with a secret
// shorter than its minimum, once a credgate site has a public origin
// (not loopback): the demo and the tests, on loopback, keep them.
var developmentSecrets = map[string]string{
	"development-only-jwt-secret-do-not-use-in-production": "jwt_secret",
	"development-admin-token":                              "admin_token",
	"development-service-token-do-not-use":                 "service_token",
	"development-webhook-secret-do-not-use-in-production":  "webhook secret",
}

// minAdminToken is the shortest admin_token credgate runs with on a
// public origin (the service token's minimum, 16, is checked always).
const minAdminToken = 16

// exposure collects, while a config is provisioned, the public origins
// of its credgate sites and the weak secrets its handlers were given;
// App.Start refuses the combination.
type exposure struct {
	mu      sync.Mutex
	origins []string // public (not loopback) origins
	weak    []string // "<where> <option>: <why>"
}

// loopbackOrigin reports whether origin's host is localhost or a
// loopback address.
func loopbackOrigin(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// noteOrigin records a credgate site's public_origin.
func (a *App) noteOrigin(origin string) {
	if loopbackOrigin(origin) {
		return
	}
	a.run.exposure.mu.Lock()
	a.run.exposure.origins = append(a.run.exposure.origins, origin)
	a.run.exposure.mu.Unlock()
}

// noteSecret records value, given to option in where, if it is one of
// the published development secrets or shorter than min (0: no minimum).
// The value itself is never repeated.
func (a *App) noteSecret(where, option, value string, min int) {
	why := ""
	switch {
	case value == "":
		return
	case developmentSecrets[value] != "":
		why = "is the published development value (examples/sandbox.Caddyfile)"
	case len(value) < min:
		why = fmt.Sprintf("is shorter than %d characters", min)
	default:
		return
	}
	a.run.exposure.mu.Lock()
	a.run.exposure.weak = append(a.run.exposure.weak, fmt.Sprintf("%s %s %s", where, option, why))
	a.run.exposure.mu.Unlock()
}

// checkExposure refuses a config that serves a public origin with a
// published or too short secret, naming each option.
func (a *App) checkExposure() error {
	e := &a.run.exposure
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.origins) == 0 || len(e.weak) == 0 {
		return nil
	}
	return fmt.Errorf("credgate: refusing to serve %s with %s: set a secret of your own (for example from an environment variable: {env.CREDGATE_ADMIN_TOKEN}); the development values work on a loopback origin only",
		strings.Join(e.origins, ", "), strings.Join(e.weak, "; "))
}

// literalSecret reports whether a secret option's value is written out in
// the config, rather than read at run time from a placeholder such as
// {env.NAME} or {file.PATH}. Caddy prints the whole config at debug level
// (its "adjusted config" line), literals included; credgate cannot
// reach into that line, so it says so when a secret would be in it. The
// published development values are public anyway.
func literalSecret(raw string) bool {
	return raw != "" && !strings.Contains(raw, "{") && developmentSecrets[raw] == ""
}

// warnLiteral warns, naming where and the option (never the value), when
// a secret is written out in the config.
func (a *App) warnLiteral(where, option, raw string) {
	if literalSecret(raw) {
		a.logger.Warn(where + " " + option + " is written literally in the config, and Caddy's debug log prints the config " +
			"(\"adjusted config\") with it: read it at run time instead, for example {env.NAME} (not {$NAME}, which the Caddyfile adapter writes into the config)")
	}
}
