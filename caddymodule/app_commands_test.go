package caddymodule

import (
	"net/http"
	"strings"
	"testing"

	"github.com/credgate/credgate/internal/pgtest"
)

// rollout set moves no one while the app's back end would not see the
// moved users' tokens: it has not read that platform's tokens through
// credgate in the last hour, and transition mode is off.
func TestRolloutSetWaitsForTheBackEnd(t *testing.T) {
	t.Parallel()
	url := pgtest.Database(t)
	path := copyExample(t)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token)
		VALUES (gen_random_uuid(), 'twitter', 'app-token'), (gen_random_uuid(), 'linkedin', 'app-token')`)
	set := func(args ...string) (string, error) {
		return runCLI(t, append([]string{"rollout", "set", "--database-url", url, "--flags", "flagd " + path}, args...)...)
	}
	out, err := set("25")
	oneErrorLine(t, "set 25 with no back-end reads", out, err, "has not read a linkedin or twitter token through credgate in the last hour")

	// Reads of one platform: that one may move, not the other. A platform
	// with no account at all may. rollout status shows the reads.
	pgtest.Exec(t, url, `INSERT INTO backend_reads (platform, via, bucket, reads) VALUES ('twitter', 'token_api', date_trunc('minute', now()), 5)`)
	status, err := runCLI(t, "rollout", "status", "--database-url", url)
	if err != nil || !strings.Contains(status, "twitter\n") ||
		!strings.Contains(status, "  back end: 5 token API and 0 egress reads in the last 1h0m0s\n") ||
		!strings.Contains(status, "  back end: 0 token API and 0 egress reads in the last 1h0m0s; transition mode off: users moved now would get tokens the back end does not see") {
		t.Fatalf("rollout status: %v\n%s", err, status)
	}
	if _, err := set("25", "--platform", "twitter"); err != nil {
		t.Fatalf("twitter, read through credgate: %v", err)
	}
	if _, err := set("25", "--platform", "facebook"); err != nil {
		t.Fatalf("facebook, with no account: %v", err)
	}
	out, err = set("25")
	oneErrorLine(t, "set 25 with linkedin unread", out, err, "has not read a linkedin token")

	// Reads an hour old no longer count.
	pgtest.Exec(t, url, `INSERT INTO backend_reads (platform, via, bucket, reads) VALUES ('linkedin', 'egress', date_trunc('minute', now()) - interval '2 hours', 5)`)
	if _, err := set("25"); err == nil {
		t.Fatal("reads from two hours ago let the rollout move")
	}
	// Transition mode, or --force, lets it through.
	pgtest.Exec(t, url, `INSERT INTO credgate_settings (name, value) VALUES ('transition_mode', 'on')`)
	if out, err := set("50"); err != nil || !strings.Contains(out, "written") {
		t.Fatalf("set 50 in transition mode: %v\n%s", err, out)
	}
	pgtest.Exec(t, url, `DELETE FROM credgate_settings`)
	if _, err := set("75", "--force"); err != nil {
		t.Fatalf("set 75 --force: %v", err)
	}
	// Down is always allowed.
	if _, err := set("0"); err != nil {
		t.Fatalf("set 0: %v", err)
	}
}

// An app that stores X as "x": once app-platform-name says so, a connect
// through credgate lands on the app's own row (which the app finds under
// "x"), and the token API serves it under credgate's name.
func TestTheAppsNameForAPlatform(t *testing.T) {
	url := pgtest.Database(t)
	out, err := runCLI(t, "app-platform-name", "twitter", "x", "--database-url", url)
	if err != nil || !strings.Contains(out, `twitter: the app stores "x"`) {
		t.Fatalf("app-platform-name: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"myspace", "m"}, {"twitter", "linkedin"}, {"twitter", "a,b"}} {
		out, err := runCLI(t, append([]string{"app-platform-name", "--database-url", url}, bad...)...)
		oneErrorLine(t, "app-platform-name "+strings.Join(bad, " "), out, err, "")
	}
	h := newHarness(t, harnessOptions{databaseURL: url, tokenAPI: "service_token " + serviceToken})
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token) VALUES ($1, 'x', 'the-apps-old-token')`, alice)
	h.connect(alice, "twitter")
	if n := h.count(`SELECT count(*) FROM social_accounts WHERE user_id = $1 AND platform = 'x' AND credentials_encrypted IS NOT NULL`, alice); n != 1 {
		t.Fatalf("the connect did not land on the app's x row")
	}
	if n := h.count(`SELECT count(*) FROM social_accounts WHERE platform = 'twitter'`); n != 0 {
		t.Fatalf("a row under credgate's name appeared beside the app's")
	}
	code, tok, body := h.fetchToken(h.internal, alice, "twitter", serviceToken)
	if code != http.StatusOK || tok.AccessToken == "the-apps-old-token" || !h.worksAtSandbox("twitter", tok.AccessToken) {
		t.Fatalf("token API: %d %s", code, body)
	}
	if out, err := runCLI(t, "app-platform-name", "twitter", "default", "--database-url", url); err != nil || !strings.Contains(out, `twitter: the app stores "twitter"`) {
		t.Fatalf("app-platform-name default: %v\n%s", err, out)
	}
}
