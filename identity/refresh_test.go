package identity_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/credgate/credgate/identity"
	"github.com/credgate/credgate/internal/supabasetest"
	"github.com/credgate/credgate/internal/testhttp"
)

// An hour-stale access token with a good refresh token: credgate
// refreshes as @supabase/ssr would, the user is recognised, and the
// cookies it writes are what @supabase/ssr itself reads back.
func TestExpiredSessionIsRefreshedAndWrittenBack(t *testing.T) {
	t.Parallel()
	fixtures, keys := supabasetest.Load(t)
	authSrv, auth := supabasetest.Auth(t, fixtures, keys)
	fx := fixtures["ssr-expired"]
	rd := supabaseReader(t, fx, keys, auth.URL+"/auth/v1", true, nil)

	// The app's stale session, grown with chunks that the refreshed
	// (smaller) session will not use: they must be expired.
	stale := fx.CookieHeader + "; " + fx.StorageKey + ".3=leftover; other=kept"
	r := requestWithCookies(stale)
	got := rd.Read(t.Context(), r, identity.MayRefresh)
	if got.Result != identity.Refreshed || got.UserID != fx.UserID {
		t.Fatalf("read %s user %q (refresh error %v), want refreshed %s", got.Result, got.UserID, got.RefreshErr, fx.UserID)
	}
	if n := authSrv.Counts().Refreshes; n != 1 {
		t.Errorf("%d refreshes at Supabase Auth, want 1", n)
	}
	var deleted bool
	for _, c := range got.SetCookies {
		if c.Name == fx.StorageKey+".3" && c.MaxAge < 0 {
			deleted = true
		}
		if c.MaxAge > 0 && (c.Path != "/" || c.SameSite != http.SameSiteLaxMode || c.HttpOnly) {
			t.Errorf("cookie %s: path %q samesite %v httponly %v, want @supabase/ssr's defaults", c.Name, c.Path, c.SameSite, c.HttpOnly)
		}
	}
	if !deleted {
		t.Error("the stale chunk was not expired")
	}
	jar := supabasetest.Browser(stale, got.SetCookies)
	access, refresh := supabasetest.ReadBack(t, fx.ProjectURL, jar)
	if access == "" || access == fx.AccessToken || refresh == fx.RefreshToken {
		t.Fatalf("@supabase/ssr reads access %.12q… refresh %q: not the refreshed session", access, refresh)
	}
	if !strings.Contains(jar, "other=kept") {
		t.Errorf("an unrelated cookie was lost: %s", jar)
	}

	// The app behind credgate sees the refreshed session too.
	identity.ReplaceRequestCookies(r, got.SetCookies)
	again := rd.Read(t.Context(), r, identity.MayRefresh)
	if again.Result != identity.OK {
		t.Errorf("the rewritten request reads %s, want ok", again.Result)
	}
	if n := authSrv.Counts().Refreshes; n != 1 {
		t.Errorf("%d refreshes after reading the rewritten request, want still 1", n)
	}

	// The app's own middleware refreshes the same stale cookie at the
	// same moment (it got the request too): Supabase Auth's reuse
	// interval answers it, and neither side's session is revoked.
	if code := refreshAt(t, auth.URL, fx.RefreshToken); code != http.StatusOK {
		t.Fatalf("the app's concurrent refresh got %d: the user would be signed out", code)
	}
	// credgate's refreshed refresh token still works for the next
	// refresh (the app's next request, an hour later).
	if code := refreshAt(t, auth.URL, refresh); code != http.StatusOK {
		t.Errorf("the refreshed session's refresh token got %d", code)
	}
}

// refreshAt refreshes a session at the stand-in as the app's own
// middleware would, and returns the status.
func refreshAt(t *testing.T, authBase, refreshToken string) int {
	t.Helper()
	resp, err := testhttp.Client().Post(authBase+"/auth/v1/token?grant_type=refresh_token&apikey="+supabasetest.PublishableKey, "application/json",
		strings.NewReader(`{"refresh_token":"`+refreshToken+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Many requests from one browser with one stale cookie rotate the
// session once.
func TestConcurrentRefreshesShareOneCall(t *testing.T) {
	t.Parallel()
	fixtures, keys := supabasetest.Load(t)
	authSrv, auth := supabasetest.Auth(t, fixtures, keys)
	fx := fixtures["ssr-expired"]
	rd := supabaseReader(t, fx, keys, auth.URL+"/auth/v1", true, nil)
	var wg sync.WaitGroup
	results := make([]identity.Result, 20)
	for i := range results {
		wg.Go(func() {
			results[i] = rd.Read(t.Context(), requestWithCookies(fx.CookieHeader), identity.MayRefresh).Result
		})
	}
	wg.Wait()
	for i, res := range results {
		if res != identity.Refreshed {
			t.Errorf("request %d: %s", i, res)
		}
	}
	if n := authSrv.Counts().RefreshRequests; n != 1 {
		t.Errorf("%d refresh calls for one stale cookie, want 1", n)
	}
}

// A refresh token Supabase Auth refuses is refresh_failed; without a
// publishable key the stale token is expired; both are no user.
func TestRefreshRefusedOrNotConfigured(t *testing.T) {
	t.Parallel()
	fixtures, keys := supabasetest.Load(t)
	_, auth := supabasetest.Auth(t, fixtures, keys)
	fx := fixtures["ssr-expired"]
	forged := strings.Replace(fx.CookieHeader, "base64-", "base64-", 1)
	r := requestWithCookies(forged)
	rd := supabaseReader(t, fx, keys, auth.URL+"/auth/v1", true, nil)
	rd.Refresher = identity.NewRefresher(auth.URL+"/auth/v1", "wrong-key", nil)
	if got := rd.Read(t.Context(), r, identity.MayRefresh); got.Result != identity.RefreshFailed || got.UserID != "" || len(got.SetCookies) != 0 {
		t.Errorf("refused refresh: %s user %q cookies %d", got.Result, got.UserID, len(got.SetCookies))
	}
	none := supabaseReader(t, fx, keys, auth.URL+"/auth/v1", false, nil)
	if got := none.Read(t.Context(), requestWithCookies(fx.CookieHeader), identity.MayRefresh); got.Result != identity.Expired || got.UserID != "" {
		t.Errorf("no refresher: %s user %q", got.Result, got.UserID)
	}
	_ = httptest.NewRecorder
}
