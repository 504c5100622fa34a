// Package demo_test drives the demo (examples/sandbox.Caddyfile and the
// page in this directory) with Debian's Chromium, headless, as a person
// would click through it: sign in, see each platform's rollout decision,
// connect every platform through the sandbox's consent pages, disconnect
// one, see the webhook events the app received, connect on the legacy arm and find the connection listed (each
// demo user with accounts of their own), and deny consent once. It runs
// in `make test`; .ci/run installs chromium when it is missing, and the
// test fails, saying so, without it. Caddy's log goes to a file in the
// test's temp dir, printed only when the test fails (internal/caddylog).
package demo_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/chromedp/chromedp"

	_ "github.com/credgate/credgate/caddymodule"
	"github.com/credgate/credgate/internal/caddylog"
	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/internal/testport"
)

// demoPorts are the variables that move the demo's listeners
// (examples/sandbox.Caddyfile): the test takes free ports, so that it
// never shares one with a running `make demo` or another test (Caddy binds
// with SO_REUSEPORT: a shared port would split connections silently).
var demoPorts = []string{"CREDGATE_DEMO_PORT", "CREDGATE_DEMO_INTERNAL_PORT", "CREDGATE_DEMO_APP_PORT",
	"CREDGATE_DEMO_SANDBOX_PORT", "CREDGATE_DEMO_METRICS_PORT"}

const alice = "11111111-1111-4111-8111-111111111111"

// rollout is a flag file with percent % of users on the new flow.
func rollout(percent int) string {
	return fmt.Sprintf(`{"flags":{
		"oauth-new-flow-enabled":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
		"oauth-new-flow":{"state":"ENABLED","variants":{"new":"new","legacy":"legacy"},"defaultVariant":"legacy",
			"targeting":{"fractional":[["new",%d],["legacy",%d]]}}}}`, percent, 100-percent)
}

func setRollout(t *testing.T, path string, percent int) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(rollout(percent)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // credgate reads the file every 250 ms
}

// chromium finds Debian's Chromium.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium: install it (apt-get install -y chromium); .ci/run does")
	return ""
}

// startDemo runs examples/sandbox.Caddyfile in this process, on a fresh
// database, with its own flag file.
func startDemo(t *testing.T) (flagFile string) {
	t.Helper()
	for _, name := range demoPorts {
		t.Setenv(name, strconv.Itoa(testport.Free(t)))
	}
	db := pgtest.Database(t)
	flagFile = filepath.Join(t.TempDir(), "flags.json")
	setRollout(t, flagFile, 100)
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", db)
	t.Setenv("ENCRYPTION_MASTER_KEY", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
	t.Setenv("CREDGATE_FLAGS_FILE", flagFile)
	t.Setenv("CREDGATE_DEMO_ROOT", root)
	src, err := os.ReadFile("../sandbox.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "sandbox.Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddylog.Load(t, cfg); err != nil {
		t.Fatal(err)
	}
	// Ready when service-health says so (the key check done, the flag
	// file read): before that the rollout sends everyone to the app's
	// flow (store_unavailable), which is right for users and wrong for
	// what this test clicks.
	health := "http://localhost:" + os.Getenv("CREDGATE_DEMO_PORT") + "/api/credentials/service-health"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, health, nil)
		req.Header.Set("Authorization", "Bearer development-admin-token")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo is not ready after 30 s: %v", err)
		}
	}
	return flagFile
}

func TestDemoInABrowser(t *testing.T) {
	flagFile := startDemo(t)
	db := os.Getenv("DATABASE_URL")
	base := "http://localhost:" + os.Getenv("CREDGATE_DEMO_PORT")

	// As root (CI) Chromium needs --no-sandbox.
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// On failure: a screenshot and the page's HTML next to the test.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := filepath.Join("browser-failure", time.Now().Format("20060102-150405"))
		os.MkdirAll(dir, 0o755)
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		if png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot()); err == nil {
			os.WriteFile(filepath.Join(dir, "page.png"), png, 0o644)
		}
		if html, err := chromedp.Run(sctx, chromedp.OuterHTML(chromedp.CSS("html"))); err == nil {
			os.WriteFile(filepath.Join(dir, "page.html"), []byte(html), 0o644)
		}
		t.Logf("screenshot and HTML in %s", dir)
	})
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	read := func(what, expression string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expression))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	noticeOf := func() (kind, text string) {
		t.Helper()
		do("the notice", chromedp.WaitVisible(chromedp.ID("notice")))
		return read("the notice's kind", `document.getElementById("notice").dataset.kind || ""`),
			read("the notice's text", `document.getElementById("notice").textContent`)
	}
	// connect clicks Connect, then the consent page's button, and returns
	// the notice the app shows when it is back.
	connect := func(platform, button string) (string, string) {
		t.Helper()
		do("connect "+platform,
			chromedp.WaitVisible(chromedp.CSS("#rollout-"+platform+"[data-flow]")), // the page asked the rollout
			chromedp.Click(chromedp.ID("connect-"+platform)),
			chromedp.WaitVisible(chromedp.ID(button)), // the sandbox's consent page
			chromedp.Click(chromedp.ID(button)),
			chromedp.WaitVisible(chromedp.ID("connect-"+platform))) // back on the app
		return noticeOf()
	}
	// cleanURL: once the notice is shown, the address bar has lost the
	// outcome's parameters (and Facebook's #_=_), so a reload does not
	// show it again.
	cleanURL := func(after string) {
		t.Helper()
		if u := read("the address", `location.pathname + location.search + location.hash`); u != "/" {
			t.Errorf("after %s the address is %q, want / (the notice's parameters removed)", after, u)
		}
	}
	// decision waits for the page's rollout row of platform to say percent
	// and returns where a click goes and why (a click within a minute
	// follows that decision). The route reads a platform's percentage at
	// most every 5 s, so the page is reloaded until the new one shows;
	// and while a database ping takes over 250 ms (a loaded machine) the
	// rollout rightly sends users to the app's flow (store_unavailable),
	// and so it does when the flag evaluation misses its 100 ms deadline
	// (timeout, seen at load 15): this test waits both out.
	decision := func(platform, percent string) (flow, reason string) {
		t.Helper()
		row := "#rollout-" + platform
		deadline := time.Now().Add(30 * time.Second)
		for {
			do("reload", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(row+"[data-flow]")))
			got := read("the percentage", `document.querySelector("`+row+`").dataset.percentage`)
			why := read("the reason", `document.querySelector("`+row+`").dataset.reason`)
			if got == percent && why != "store_unavailable" && why != "timeout" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the page shows %q %% (%s), want %s", platform, got, why, percent)
			}
			time.Sleep(time.Second)
		}
		if text := read("the row", `document.querySelector("`+row+`").textContent`); !strings.Contains(text, percent+" % on the new flow") {
			t.Errorf("%s's rollout row says %q, want %s %% on the new flow", platform, text, percent)
		}
		return read("the flow", `document.querySelector("`+row+`").dataset.flow`),
			read("the reason", `document.querySelector("`+row+`").dataset.reason`)
	}
	// listed is the page's connections: "platform/arm/account" each.
	listed := func() string {
		return read("the rows", `[...document.querySelectorAll("#accounts tbody tr")].map(tr =>
			tr.dataset.platform + "/" + tr.dataset.arm + "/" + tr.children[1].textContent).sort().join(",")`)
	}
	signIn := func(name string) {
		t.Helper()
		do("sign in as "+name, chromedp.Navigate(base+"/"),
			chromedp.Click(chromedp.ID("signin-"+name)),
			chromedp.WaitVisible(chromedp.ID("connect-twitter")))
	}

	// Sign in.
	signIn("alice")
	// The page signs in as a current Supabase app does: @supabase/ssr's
	// cookie, a base64- session, and nothing in the 2022 helpers' name.
	if c := read("the session cookie", `document.cookie.split("; ").filter(c => c.startsWith("sb-")).map(c => c.slice(0, 31)).join(",")`); c != "sb-localhost-auth-token=base64-" {
		t.Fatalf("cookies after sign-in: %q, want only sb-localhost-auth-token=base64-…", c)
	}

	// At 100 %: the page says every platform goes to the new flow, by the
	// rollout's split, and every connect does.
	for _, p := range []string{"twitter", "linkedin", "facebook", "instagram"} {
		if flow, reason := decision(p, "100"); flow != "new" || reason != "rollout" {
			t.Fatalf("%s at 100 %%: the page says a click goes to %s (%s)", p, flow, reason)
		}
		kind, text := connect(p, "approve")
		if kind != "ok" || !strings.Contains(text, p+" connected through the new flow") || !strings.Contains(text, "reason rollout") ||
			!strings.Contains(text, "at 100 % new") {
			t.Fatalf("%s at 100 %%: notice %s %q, want the new flow, and why", p, kind, text)
		}
		cleanURL(p + "'s connect")
	}
	do("the list", chromedp.WaitVisible(chromedp.CSS(`#accounts tbody tr[data-platform="instagram"]`)))
	if got := listed(); got != "facebook/new/alice,instagram/new/alice,linkedin/new/alice,twitter/new/alice" {
		t.Fatalf("accounts listed: %s, want alice's 4 on the new flow", got)
	}
	if n := count(t, db, `SELECT count(*) FROM social_accounts WHERE user_id = $1 AND credentials_encrypted IS NOT NULL AND connected_via = 'credgate'`, alice); n != 4 {
		t.Fatalf("%d encrypted accounts in the database, want 4", n)
	}

	// Disconnect one.
	do("disconnect twitter", chromedp.Click(chromedp.ID("disconnect-twitter")),
		chromedp.WaitNotPresent(chromedp.CSS(`#accounts tbody tr[data-platform="twitter"]`)))
	if n := count(t, db, `SELECT count(*) FROM social_accounts WHERE user_id = $1 AND platform = 'twitter' AND credentials_encrypted IS NOT NULL`, alice); n != 0 {
		t.Fatal("the disconnected account still has its blob")
	}

	// The app heard of all of it: credgate's signed account events, each
	// verified by the app before it kept it, on the page (which looks
	// every 3 s).
	ectx, ecancel := context.WithTimeout(ctx, 30*time.Second)
	err := chromedp.Do(ectx, chromedp.WaitVisible(chromedp.CSS(`#events tr[data-type="account.disconnected"][data-platform="twitter"]`)))
	ecancel()
	if err != nil {
		t.Fatalf("no account.disconnected event on the page within 30 s: %v (events: %s)", err,
			read("the events", `document.getElementById("events").textContent`))
	}
	if got := read("the events", `[...document.querySelectorAll("#events tbody tr")].map(tr => tr.dataset.type + "/" + tr.dataset.platform).sort().join(",")`); got !=
		"account.connected/facebook,account.connected/instagram,account.connected/linkedin,account.connected/twitter,account.disconnected/twitter" {
		t.Errorf("the webhook events on the page: %s, want the 4 connects and the disconnect", got)
	}

	// An account that needs the user (as a failed renewal leaves it): the
	// page asks for a reconnect, and the Reconnect button is a connect.
	if _, err := pgtest.Pool(t, db).Exec(context.Background(),
		`UPDATE social_accounts SET status = 'needs_reauth' WHERE user_id = $1 AND platform = 'facebook'`, alice); err != nil {
		t.Fatal(err)
	}
	do("the reconnect prompt", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("prompt-facebook")))
	if text := read("the prompt", `document.getElementById("prompt-facebook").textContent`); !strings.Contains(text, "Your Facebook connection stopped working") {
		t.Errorf("the reconnect prompt says %q", text)
	}
	do("reconnect", chromedp.Click(chromedp.CSS("#prompt-facebook button")), chromedp.WaitVisible(chromedp.ID("approve")),
		chromedp.Click(chromedp.ID("approve")), chromedp.WaitVisible(chromedp.ID("connect-facebook")))
	if kind, text := noticeOf(); kind != "ok" || !strings.Contains(text, "facebook connected") {
		t.Fatalf("the reconnect: notice %s %q", kind, text)
	}
	do("the prompt gone", chromedp.WaitVisible(chromedp.CSS(`#accounts tr[data-platform="facebook"]`)), chromedp.WaitNotPresent(chromedp.ID("prompt-facebook")))

	// At 0 %: the page says the click stays with the app, the app handles
	// the connect, and the page lists it as the app's, with alice's
	// account at the platform.
	setRollout(t, flagFile, 0)
	if flow, reason := decision("twitter", "0"); flow != "legacy" || reason != "rollout" {
		t.Fatalf("twitter at 0 %%: the page says a click goes to %s (%s)", flow, reason)
	}
	if kind, text := connect("twitter", "approve"); kind != "legacy" || !strings.Contains(text, "handled by the legacy app") ||
		!strings.Contains(text, "reason rollout") || !strings.Contains(text, "at 0 % new") {
		t.Fatalf("twitter at 0 %%: notice %s %q", kind, text)
	}
	cleanURL("the legacy connect")
	do("the legacy connection listed", chromedp.WaitVisible(chromedp.CSS(`#accounts tbody tr[data-platform="twitter"][data-arm="app"]`)))
	aliceTwitter := read("alice's twitter account", `document.querySelector('#accounts tr[data-platform="twitter"][data-arm="app"]').children[1].textContent`)
	if !strings.HasPrefix(aliceTwitter, "alice (") {
		t.Fatalf("the legacy connection's account: %q, want alice's", aliceTwitter)
	}
	if got := listed(); !strings.Contains(got, "twitter/app/alice (") || strings.Count(got, "/new/") != 3 {
		t.Fatalf("accounts listed: %s, want the app's twitter and 3 on the new flow", got)
	}

	// Another user: accounts of their own at the platform, and none of
	// alice's on the page.
	do("sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin-bob")))
	signIn("bob")
	if kind, text := connect("twitter", "approve"); kind != "legacy" {
		t.Fatalf("bob's twitter at 0 %%: notice %s %q", kind, text)
	}
	do("bob's legacy connection listed", chromedp.WaitVisible(chromedp.CSS(`#accounts tbody tr[data-platform="twitter"][data-arm="app"]`)))
	bobTwitter := read("bob's twitter account", `document.querySelector('#accounts tr[data-platform="twitter"][data-arm="app"]').children[1].textContent`)
	if !strings.HasPrefix(bobTwitter, "bob (") || strings.TrimPrefix(bobTwitter, "bob") == strings.TrimPrefix(aliceTwitter, "alice") {
		t.Fatalf("bob's twitter account %q, alice's %q: want two accounts", bobTwitter, aliceTwitter)
	}
	if got := listed(); strings.Contains(got, "alice") {
		t.Fatalf("bob's page lists alice's accounts: %s", got)
	}

	// Denied consent, on the new flow: the error is shown, then the
	// address is cleaned.
	setRollout(t, flagFile, 100)
	decision("linkedin", "100")
	if kind, text := connect("linkedin", "deny"); kind != "error" || !strings.Contains(text, "access_denied") ||
		!strings.Contains(text, "You cancelled connecting LinkedIn") {
		t.Fatalf("denied consent: notice %s %q", kind, text)
	}
	cleanURL("a denied consent")
}

func count(t *testing.T, db, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pgtest.Pool(t, db).QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// docs/frontend.md carries credgate.js whole, as the snippet of the
// front-end contract: the copy in the doc is the file the demo runs.
func TestTheFrontendDocCarriesTheSnippet(t *testing.T) {
	t.Parallel()
	js, err := os.ReadFile("credgate.js")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/frontend.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```js\n"+string(js)+"```\n") {
		t.Error("docs/frontend.md does not carry examples/demo/credgate.js as it is: copy the file into its last js block")
	}
}
