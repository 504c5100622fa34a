// Package oauthtest runs third-party OAuth servers for tests: servers no
// one here wrote, configured as their users run them.
package oauthtest

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
)

// The client the servers know.
const (
	ClientID     = "client-id"
	ClientSecret = "client-secret-7f3a9c"
)

// GoOAuth2Server is go-oauth2/oauth2 v4, a server no one here wrote, as
// its users run it: it authenticates clients with client_secret_basic by
// default, or with client_secret_post when post is true. tokenCalls
// counts the token endpoint's requests.
func GoOAuth2Server(t testing.TB, redirect string, post bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	manager := manage.NewDefaultManager()
	manager.MustTokenStorage(store.NewMemoryTokenStore())
	clients := store.NewClientStore()
	clients.Set(ClientID, &models.Client{ID: ClientID, Secret: ClientSecret, Domain: redirect})
	manager.MapClientStorage(clients)
	srv := server.NewDefaultServer(manager)
	srv.SetAllowGetAccessRequest(false)
	srv.SetUserAuthorizationHandler(func(http.ResponseWriter, *http.Request) (string, error) { return "user-7", nil })
	if post {
		srv.SetClientInfoHandler(server.ClientFormHandler)
	}
	var tokenCalls atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if err := srv.HandleAuthorizeRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		tokenCalls.Add(1)
		srv.HandleTokenRequest(w, r)
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts, &tokenCalls
}
