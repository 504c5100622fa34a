// Package testhttp gives tests HTTP clients whose transport is not
// http.DefaultTransport.
//
// httptest.Server.Close closes http.DefaultTransport's idle connections.
// In a package whose tests run in parallel, one test's server closing
// then breaks another test's request that has just taken an idle
// connection ("http: CloseIdleConnections called"). Go retries that only
// for a request it may replay, so a POST fails, and the test with it, now
// and then. The clients here share a transport of their own, which no
// server's Close touches.
package testhttp

import "net/http"

var transport = http.DefaultTransport.(*http.Transport).Clone()

// Client returns a client that follows redirects, as http.DefaultClient
// does.
func Client() *http.Client { return &http.Client{Transport: transport} }

// NoRedirects returns a client that hands a redirect back as it is, for
// tests that follow an OAuth flow's redirects themselves.
func NoRedirects() *http.Client {
	return &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}
