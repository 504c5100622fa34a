package secret

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

// MinAdminToken is the shortest admin token credgate runs with on a
// public origin (the service token's minimum, 16, is checked always).
const MinAdminToken = 16

// Exposure collects, while a config is provisioned, the public origins
// of its credgate sites and the weak secrets its handlers were given;
// Check refuses the combination. The zero value is ready to use, from
// several goroutines.
type Exposure struct {
	mu      sync.Mutex
	origins []string // public (not loopback) origins
	weak    []string // "<where> <option> <why>"
}

// Loopback reports whether origin's host is localhost or a loopback
// address.
func Loopback(origin string) bool {
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

// NoteOrigin records a credgate site's public origin, unless it is
// loopback.
func (e *Exposure) NoteOrigin(origin string) {
	if Loopback(origin) {
		return
	}
	e.mu.Lock()
	e.origins = append(e.origins, origin)
	e.mu.Unlock()
}

// NoteSecret records value, given to option in where, if it is one of
// the published development secrets or shorter than min (0: no minimum).
// The value itself is never repeated.
func (e *Exposure) NoteSecret(where, option, value string, min int) {
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
	e.mu.Lock()
	e.weak = append(e.weak, fmt.Sprintf("%s %s %s", where, option, why))
	e.mu.Unlock()
}

// Check refuses a config that serves a public origin with a published or
// too short secret, naming each option.
func (e *Exposure) Check() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.origins) == 0 || len(e.weak) == 0 {
		return nil
	}
	return fmt.Errorf("credgate: refusing to serve %s with %s: set a secret of your own (for example from an environment variable: {env.CREDGATE_ADMIN_TOKEN}); the development values work on a loopback origin only",
		strings.Join(e.origins, ", "), strings.Join(e.weak, "; "))
}

// Literal reports whether a secret option's value is written out in the
// config, rather than read at run time from a placeholder such as
// {env.NAME} or {file.PATH}. Caddy prints the whole config at debug level
// (its "adjusted config" line), literals included; credgate cannot
// reach into that line, so it says so when a secret would be in it. The
// published development values are public anyway.
func Literal(raw string) bool {
	return raw != "" && !strings.Contains(raw, "{") && developmentSecrets[raw] == ""
}
