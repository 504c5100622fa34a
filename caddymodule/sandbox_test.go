package caddymodule

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/credgate/credgate/internal/testhttp"
)

func TestSandboxCommandServesAndPrintsCredentials(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "sandbox.json")
	os.WriteFile(cfg, []byte(`{"auto_approve": true, "faults": {"linkedin.token": {"html_502": true}}}`), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	root := &cobra.Command{Use: "credgate", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(credgateCommands()...)
	root.SetOut(pw)
	root.SetArgs([]string{"sandbox", "--listen", "127.0.0.1:0", "--config", cfg, "--app-origin", "https://app.example"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); pw.Close() }()

	lines := bufio.NewScanner(pr)
	var out []string
	var base string
	for lines.Scan() {
		out = append(out, lines.Text())
		if b, ok := strings.CutPrefix(lines.Text(), "credgate sandbox listening on "); ok {
			base = b
		}
		if strings.Contains(lines.Text(), "stats:") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	all := strings.Join(out, "\n")
	if base == "" || !strings.Contains(all, "client_id=twitter-client-id client_secret=twitter-client-secret") ||
		!strings.Contains(all, "https://app.example/api/auth/oauth/instagram/callback") {
		t.Fatalf("startup output:\n%s", all)
	}

	q := url.Values{"response_type": {"code"}, "client_id": {"facebook-client-id"}, "state": {"s"},
		"redirect_uri": {"https://app.example/api/facebook/callback"}}
	resp, err := noFollow.Get(base + "/facebook/v22.0/dialog/oauth?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.Contains(resp.Header.Get("Location"), "code=") {
		t.Errorf("auto-approved authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = noFollow.Post(base+"/linkedin/oauth/v2/accessToken", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("fault from the config file not applied: %d", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("sandbox exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sandbox did not stop on cancel")
	}
}

func TestSandboxCommandRejectsBadConfig(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "sandbox.json")
	os.WriteFile(cfg, []byte(`{"auto_aprove": true}`), 0o600)
	_, err := runCLI(t, "sandbox", "--listen", "127.0.0.1:0", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), `unknown field "auto_aprove"`) {
		t.Errorf("bad config: %v", err)
	}
}

var noFollow = testhttp.NoRedirects()
