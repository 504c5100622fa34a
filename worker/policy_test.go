package worker_test

import (
	"testing"
	"time"

	"github.com/credgate/credgate/oauth"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
	"github.com/credgate/credgate/worker"
)

func TestPolicyDecidesByPlatformAndLifetime(t *testing.T) {
	t.Parallel()
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	withRT := func(lifetime time.Duration) vault.Credentials {
		return vault.Credentials{AccessToken: secret.New("a"), RefreshToken: secret.New("r"), IssuedAt: issued, Expiry: issued.Add(lifetime)}
	}
	noRT := func(lifetime time.Duration) vault.Credentials {
		return vault.Credentials{AccessToken: secret.New("a"), IssuedAt: issued, Expiry: issued.Add(lifetime)}
	}
	twitter := worker.Renewal{How: oauth.RenewWithRefreshToken}
	instagram := worker.Renewal{How: oauth.RenewAccessToken, MinAge: 24 * time.Hour}
	facebook := worker.Renewal{How: oauth.RenewNever}
	day := 24 * time.Hour
	connected := vault.Account{Status: vault.StatusConnected, UpdatedAt: issued}
	expiring := vault.Account{Status: vault.StatusExpiring, UpdatedAt: issued}
	cases := []struct {
		name    string
		r       worker.Renewal
		a       vault.Account
		c       vault.Credentials
		after   time.Duration
		want    worker.Step
		wantAt  time.Duration // from issued; 0 = not checked
		comment string
	}{
		{"twitter early", twitter, connected, withRT(2 * time.Hour), time.Hour, worker.StepWait, 105 * time.Minute, "due 15 min before its 2 h expiry"},
		{"twitter due", twitter, connected, withRT(2 * time.Hour), 106 * time.Minute, worker.StepRefresh, 0, ""},
		{"twitter expired", twitter, connected, withRT(2 * time.Hour), 3 * time.Hour, worker.StepRefresh, 0, "the refresh token outlives the access token"},
		{"linkedin 60 d", twitter, connected, withRT(60 * day), day, worker.StepWait, 57 * day, "long-lived: 72 h ahead"},
		{"linkedin without refresh token", twitter, connected, noRT(60 * day), 58 * day, worker.StepMarkExpiring, 60 * day, ""},
		{"linkedin without refresh token, expired", twitter, expiring, noRT(60 * day), 61 * day, worker.StepNeedsReauth, 0, ""},
		{"facebook before the window", facebook, connected, noRT(60 * day), day, worker.StepWait, 57 * day, ""},
		{"facebook in the window", facebook, connected, noRT(60 * day), 58 * day, worker.StepMarkExpiring, 60 * day, ""},
		{"facebook already expiring", facebook, expiring, noRT(60 * day), 58 * day, worker.StepWait, 60 * day, "marked once"},
		{"facebook expired", facebook, expiring, noRT(60 * day), 60 * day, worker.StepNeedsReauth, 0, ""},
		{"instagram due", instagram, connected, noRT(60 * day), 58 * day, worker.StepRefresh, 0, ""},
		{"instagram younger than 24 h", instagram, connected, noRT(24*time.Hour + 10*time.Minute), 20 * time.Hour, worker.StepWait, 24 * time.Hour, "ig_refresh_token needs a day-old token"},
		{"instagram that dies before 24 h", instagram, connected, noRT(20 * time.Hour), 12 * time.Hour, worker.StepWait, 20 * time.Hour, ""},
		{"instagram expired", instagram, connected, noRT(60 * day), 61 * day, worker.StepNeedsReauth, 0, ""},
		{"a token shorter than the window", twitter, connected, withRT(10 * time.Minute), time.Minute, worker.StepWait, 5 * time.Minute, "never in the first half of its life"},
		{"legacy, expiry unknown, refreshable", twitter, connected, vault.Credentials{RefreshToken: secret.New("r")}, 0, worker.StepRefresh, 0, "once, to learn it"},
		{"legacy, expiry unknown, refreshed before", twitter, vault.Account{Status: vault.StatusConnected, LastRefreshedAt: &issued},
			vault.Credentials{RefreshToken: secret.New("r")}, 0, worker.StepIdle, 0, "never a loop"},
		{"legacy, expiry unknown, no refresh token", twitter, connected, vault.Credentials{}, 0, worker.StepIdle, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := worker.Policy{}.Next(tc.r, tc.a, tc.c, issued.Add(tc.after))
			if got.Step != tc.want {
				t.Fatalf("step %v, want %v (%s)", got.Step, tc.want, tc.comment)
			}
			if tc.wantAt != 0 && !got.At.Equal(issued.Add(tc.wantAt)) {
				t.Errorf("at %v, want issued+%v", got.At.Sub(issued), tc.wantAt)
			}
		})
	}
}

// After a renewal the next plan is a wait, never a second refresh: each
// token is renewed at most once per lifetime.
func TestPolicyNeverRefreshesTheSameLifetimeTwice(t *testing.T) {
	t.Parallel()
	p := worker.Policy{}
	r := worker.Renewal{How: oauth.RenewWithRefreshToken}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, lifetime := range []time.Duration{time.Minute, 10 * time.Minute, 2 * time.Hour, 73 * time.Hour, 60 * 24 * time.Hour} {
		fresh := vault.Credentials{RefreshToken: secret.New("r"), IssuedAt: now, Expiry: now.Add(lifetime)}
		got := p.Next(r, vault.Account{Status: vault.StatusConnected}, fresh, now)
		if got.Step != worker.StepWait || got.At.Sub(now) < lifetime/2 {
			t.Errorf("lifetime %v: right after renewal the plan is %v at +%v, want a wait of at least half the lifetime", lifetime, got.Step, got.At.Sub(now))
		}
	}
}

// A read's min_validity counts for at most half a token's life: asked for
// more than the token can ever have (3h of X's 2 h tokens), a fresh token
// is served as it is instead of being renewed at every read. Issue 26,
// item 13.
func TestNeedsRenewalNeverInTheFirstHalfOfALife(t *testing.T) {
	t.Parallel()
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	twitter := worker.Renewal{How: oauth.RenewWithRefreshToken}
	x := vault.Credentials{AccessToken: secret.New("a"), RefreshToken: secret.New("r"), IssuedAt: issued, Expiry: issued.Add(2 * time.Hour)}
	a := vault.Account{Status: vault.StatusConnected, UpdatedAt: issued}
	for _, tc := range []struct {
		minValidity, after time.Duration
		need               bool
	}{
		{3 * time.Hour, 0, false},
		{3 * time.Hour, 59 * time.Minute, false},
		{3 * time.Hour, 61 * time.Minute, true},
		{90 * time.Minute, 59 * time.Minute, false},
		{90 * time.Minute, 61 * time.Minute, true},
		{5 * time.Minute, 61 * time.Minute, false},
		{5 * time.Minute, 116 * time.Minute, true},
		{5 * time.Minute, 3 * time.Hour, true}, // expired
	} {
		need, can := worker.Policy{}.NeedsRenewal(twitter, a, x, issued.Add(tc.after), tc.minValidity)
		if need != tc.need || (need && !can) {
			t.Errorf("min_validity %v, %v after issue: need %v can %v, want need %v", tc.minValidity, tc.after, need, can, tc.need)
		}
	}
}
