package caddymodule

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/credgate/credgate/internal/pgtest"
)

// Every platform's connect stores the scopes the user granted, and the
// token API serves them: from the token response (X, LinkedIn,
// Instagram) or, where it has none, the platform's own permissions call
// (Facebook's GET /me/permissions). Issue 26, item 12: a Facebook
// connect stored NULL and the token API answered scopes: [] although the
// consent granted pages_manage_posts.
func TestGrantedScopesAreStoredAndServed(t *testing.T) {
	h := newHarness(t, harnessOptions{tokenAPI: "service_token " + serviceToken, egress: "service_token " + serviceToken})
	for _, platform := range []string{"twitter", "linkedin", "facebook", "instagram"} {
		t.Run(platform, func(t *testing.T) {
			if loc := h.connect(alice, platform); !strings.Contains(loc, "connected="+platform) {
				t.Fatalf("connect: %s", loc)
			}
			want := strings.Fields(egressScopes[platform])
			slices.Sort(want)
			var stored []string
			pool := pgtest.Pool(t, h.db)
			if err := pool.QueryRow(t.Context(), `SELECT coalesce(scopes, '{}') FROM social_accounts WHERE user_id = $1 AND platform = $2`,
				alice, platform).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			slices.Sort(stored)
			if !slices.Equal(stored, want) {
				t.Errorf("stored scopes %q, want %q", stored, want)
			}
			code, tok, body := h.fetchToken(h.internal, alice, platform, serviceToken)
			if code != http.StatusOK {
				t.Fatalf("token: %d %s", code, body)
			}
			slices.Sort(tok.Scopes)
			if !slices.Equal(tok.Scopes, want) {
				t.Errorf("the token API's scopes %q, want %q", tok.Scopes, want)
			}
		})
	}
}
