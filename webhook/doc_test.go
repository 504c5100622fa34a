package webhook_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/credgate/credgate/webhook"
)

// The Node.js verification snippet in docs/webhooks.md, run as written
// against deliveries signed here: it accepts what credgate signs (a
// rotation's second signature included) and refuses a changed body, a
// wrong secret and a stale timestamp. A doc whose snippet does not work
// is a defect like a failing test.
func TestTheDocsNodeSnippetVerifiesCredgatesSignatures(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed to check docs/webhooks.md's snippet (make test installs it): ", err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "webhooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```js\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/webhooks.md has no js block")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "verify.mjs"), m[1], 0o600); err != nil {
		t.Fatal(err)
	}
	driver := `import { verifyCredgateWebhook } from "./verify.mjs";
import fs from "node:fs";
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(cases.map((c) => verifyCredgateWebhook(c.headers, Buffer.from(c.body), c.secret))));
`
	if err := os.WriteFile(filepath.Join(dir, "driver.mjs"), []byte(driver), 0o600); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt","type":"account.revoked","data":{"reason":"invalid_grant"}}`)
	type delivery struct {
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
		Secret  string            `json:"secret"`
	}
	signedAt := func(at time.Time, b []byte, secrets ...[]byte) map[string]string {
		return map[string]string{
			"credgate-webhook-timestamp": strconv.FormatInt(at.Unix(), 10),
			"credgate-webhook-signature": webhook.Sign(b, at, secrets...),
		}
	}
	now := time.Now()
	cases := []delivery{
		{signedAt(now, body, signingKey), string(body), string(signingKey)},
		{signedAt(now, body, []byte("another-secret-of-at-least-24-bytes"), signingKey), string(body), string(signingKey)},
		{signedAt(now, body, signingKey), string(body) + " ", string(signingKey)},
		{signedAt(now, body, signingKey), string(body), "not-the-secret-at-all-0123456789"},
		{signedAt(now.Add(-10*time.Minute), body, signingKey), string(body), string(signingKey)},
	}
	in, _ := json.Marshal(cases)
	cmd := exec.Command(node, "driver.mjs")
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(string(in))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "[true,true,false,false,false]" {
		t.Errorf("the snippet answered %s, want [true,true,false,false,false] (signed, rotation, changed body, wrong secret, stale)", got)
	}
}
