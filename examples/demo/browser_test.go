// Package demo_test drives the demo (examples/sandbox.Caddyfile and the
// page in this directory) with Debian's Chromium, headless, as a person
// would click through it: sign in, connect every platform through the
// sandbox's consent pages, disconnect one, connect one on the legacy arm,
// and deny consent once. It runs in `make test`; .ci/run installs
// chromium when it is missing, and the test fails, saying so, without it.
package demo_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/chromedp/chromedp"

	_ "github.com/credgate/credgate/caddymodule"
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
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	return flagFile
}

func TestDemoInABrowser(t *testing.T) {
	flagFile := startDemo(t)
	db := os.Getenv("DATABASE_URL")

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
			chromedp.Click(chromedp.ID("connect-"+platform)),
			chromedp.WaitVisible(chromedp.ID(button)), // the sandbox's consent page
			chromedp.Click(chromedp.ID(button)),
			chromedp.WaitVisible(chromedp.ID("connect-"+platform))) // back on the app
		return noticeOf()
	}

	// Sign in.
	do("sign in", chromedp.Navigate("http://localhost:"+os.Getenv("CREDGATE_DEMO_PORT")+"/"),
		chromedp.Click(chromedp.ID("signin-alice")),
		chromedp.WaitVisible(chromedp.ID("connect-twitter")))
	// The page signs in as a current Supabase app does: @supabase/ssr's
	// cookie, a base64- session, and nothing in the 2022 helpers' name.
	if c := read("the session cookie", `document.cookie.split("; ").filter(c => c.startsWith("sb-")).map(c => c.slice(0, 31)).join(",")`); c != "sb-localhost-auth-token=base64-" {
		t.Fatalf("cookies after sign-in: %q, want only sb-localhost-auth-token=base64-…", c)
	}

	// At 100 %: every platform through the new flow.
	for _, p := range []string{"twitter", "linkedin", "facebook", "instagram"} {
		if kind, text := connect(p, "approve"); kind != "ok" || !strings.Contains(text, p+" connected through the new flow") {
			t.Fatalf("%s at 100 %%: notice %s %q", p, kind, text)
		}
	}
	do("the list", chromedp.WaitVisible(chromedp.CSS(`#accounts tbody tr[data-platform="instagram"]`)))
	rows := read("the rows", `String(document.querySelectorAll("#accounts tbody tr").length)`)
	arms := read("the arms", `[...document.querySelectorAll("#accounts .arm")].map(e => e.textContent).join(",")`)
	if rows != "4" || strings.Count(arms, "new flow (credgate)") != 4 {
		t.Fatalf("accounts listed: %s (%s), want 4 on the new flow", rows, arms)
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

	// At 0 %: the legacy app handles the connect.
	setRollout(t, flagFile, 0)
	if kind, text := connect("twitter", "approve"); kind != "legacy" || !strings.Contains(text, "handled by the legacy app") {
		t.Fatalf("twitter at 0 %%: notice %s %q", kind, text)
	}

	// Denied consent, on the new flow: the error is shown.
	setRollout(t, flagFile, 100)
	if kind, text := connect("linkedin", "deny"); kind != "error" || !strings.Contains(text, "access_denied") {
		t.Fatalf("denied consent: notice %s %q", kind, text)
	}
}

func count(t *testing.T, db, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pgtest.Pool(t, db).QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
