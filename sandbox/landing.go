package sandbox

import (
	"html/template"
	"maps"
	"net/http"
	"slices"
)

// Faults returns the configured faults by "<platform>.<endpoint>".
func (s *Server) Faults() map[string]Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.faults)
}

// realPaths are each platform's endpoints the sandbox serves, under
// /<platform>, for the landing page.
var realPaths = map[string][]string{
	"twitter":   {"GET /i/oauth2/authorize", "POST /2/oauth2/token", "POST /2/oauth2/revoke", "GET /2/users/me"},
	"linkedin":  {"GET /oauth/v2/authorization", "POST /oauth/v2/accessToken", "GET /v2/userinfo"},
	"facebook":  {"GET /v22.0/dialog/oauth", "GET|POST /v22.0/oauth/access_token", "GET /me", "DELETE /{id}/permissions"},
	"instagram": {"GET /oauth/authorize", "POST /oauth/access_token", "GET /access_token", "GET /refresh_access_token", "GET /me"},
}

// serveLanding answers GET / with a page listing the platforms'
// endpoints, the registered apps, the active faults and the counters: what
// a developer opening the sandbox in a browser wants to see.
func (s *Server) serveLanding(w http.ResponseWriter) {
	type platform struct {
		Name  string
		Paths []string
	}
	var platforms []platform
	for _, p := range Platforms {
		platforms = append(platforms, platform{p, realPaths[p]})
	}
	faults := s.Faults()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	landingPage.Execute(w, map[string]any{
		"Platforms": platforms, "Apps": s.Apps(), "Stats": s.Stats(),
		"FaultKeys": slices.Sorted(maps.Keys(faults)), "Faults": faults, "Now": s.clock.Now(),
	})
}

var landingPage = template.Must(template.New("landing").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>credgate sandbox</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:54rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #dde3e8}
code{font-size:.9em}</style></head><body>
<h1>credgate sandbox</h1>
<p>Twitter/X, LinkedIn, Facebook and Instagram as their OAuth endpoints behave, on one server, for development and tests. Clock: {{.Now.UTC.Format "2006-01-02 15:04:05"}} UTC.</p>
<h2>Endpoints</h2>
<table><tr><th>platform</th><th>paths (under /&lt;platform&gt;)</th></tr>
{{range .Platforms}}<tr><td>{{.Name}}</td><td>{{range .Paths}}<code>{{.}}</code><br>{{end}}</td></tr>{{end}}
</table>
<h2>Apps</h2>
<table><tr><th>platform</th><th>client id</th><th>redirect URIs</th></tr>
{{range .Apps}}<tr><td>{{.Platform}}</td><td><code>{{.ClientID}}</code></td><td>{{range .RedirectURIs}}<code>{{.}}</code><br>{{end}}</td></tr>{{end}}
</table>
<h2>Active faults</h2>
{{if .FaultKeys}}<table><tr><th>where</th><th>fault</th></tr>
{{range $k := .FaultKeys}}<tr><td><code>{{$k}}</code></td><td><code>{{index $.Faults $k}}</code></td></tr>{{end}}
</table>{{else}}<p id="no-faults">None.</p>{{end}}
<p>Set one: <code>curl -X PUT -d '{"error_rate":0.2}' http://localhost:9090/_sandbox/faults/linkedin.token</code>; clear it with <code>DELETE</code>.</p>
<h2>Counters</h2>
<table><tr><th>platform</th><th>codes issued</th><th>redeemed</th><th>tokens</th><th>refreshes</th><th>revocations</th></tr>
{{range $p, $st := .Stats}}<tr><td>{{$p}}</td><td>{{$st.CodesIssued}}</td><td>{{$st.CodesRedeemed}}</td><td>{{$st.TokensIssued}}</td><td>{{$st.Refreshes}}</td><td>{{$st.Revocations}}</td></tr>{{end}}
</table>
<p>JSON: <a href="/_sandbox/stats">/_sandbox/stats</a> · <a href="/_sandbox/apps">/_sandbox/apps</a></p>
</body></html>`))
