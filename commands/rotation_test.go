package commands

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/credgate/credgate/internal/pgtest"
	"github.com/credgate/credgate/secret"
	"github.com/credgate/credgate/vault"
)

// testKey is a master key of its own for each b.
func testKey(b byte) string {
	sum := sha256.Sum256([]byte{b})
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Not parallel: the commands read keys from the environment.
func TestRotateCommand(t *testing.T) {
	url := pgtest.Database(t)
	pool := pgtest.Pool(t, url)
	ctx := context.Background()
	old, _ := vault.NewKeyring(vault.KeyConfig{MasterKey: testKey(1)})
	if _, err := old.VerifyFingerprints(ctx, pool, vault.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"} {
		if _, err := vault.NewAccounts(old).Upsert(ctx, pool, vault.Connection{UserID: user, Platform: "twitter",
			Credentials: vault.Credentials{AccessToken: secret.New("tok")}}); err != nil {
			t.Fatal(err)
		}
	}

	// The new key under the old id is refused before anything changes.
	t.Setenv("DATABASE_URL", url)
	t.Setenv(vault.EnvMasterKey, testKey(100))
	t.Setenv(vault.EnvPreviousKeys, "")
	if _, err := runCLI(t, "rotate"); err == nil || !strings.Contains(err.Error(), "key id 1 in ENCRYPTION_MASTER_KEY is not the key first used") {
		t.Fatalf("wrong key under an old id: %v", err)
	}

	// Without the old key the blobs cannot be rewrapped: refused before
	// anything changes, naming the missing key.
	t.Setenv(vault.EnvMasterKeyID, "2")
	if _, err := runCLI(t, "rotate"); err == nil || !strings.Contains(err.Error(), "key ids 1 seal credentials") {
		t.Fatalf("rotate without the previous key: %v", err)
	}

	t.Setenv(vault.EnvPreviousKeys, "1:"+testKey(1))
	out, err := runCLI(t, "rotate", "--batch-size", "1")
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	for _, want := range []string{"✓ rewrap: 2 rows re-encrypted under key 2, 0 failed, 0 left on old keys", "can be removed from ENCRYPTION_PREVIOUS_KEYS"} {
		if !strings.Contains(out, want) {
			t.Errorf("rotate output lacks %q:\n%s", want, out)
		}
	}

	t.Setenv(vault.EnvMasterKey, "<generate-secure-key>")
	if _, err := runCLI(t, "rotate"); err == nil || !strings.Contains(err.Error(), "caddy credgate keygen") {
		t.Errorf("placeholder key: %v", err)
	}
}

func TestBackfillCommand(t *testing.T) {
	url := pgtest.Database(t)
	pgtest.Exec(t, url, `INSERT INTO social_accounts (user_id, platform, access_token, refresh_token)
		SELECT gen_random_uuid(), 'linkedin', 'plain-' || i, NULL FROM generate_series(1, 25) i`)
	t.Setenv("DATABASE_URL", url)
	t.Setenv(vault.EnvMasterKey, testKey(1))
	t.Setenv(vault.EnvMasterKeyID, "")
	t.Setenv(vault.EnvPreviousKeys, "")

	out, err := runCLI(t, "backfill", "--dry-run")
	if err != nil || !strings.Contains(out, "dry run: 25 rows would be encrypted, 0 rows with a blob would be verified") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, err = runCLI(t, "backfill", "--batch-size", "10")
	if err != nil || !strings.Contains(out, "✓ backfill: 25 rows encrypted, 0 already matched, 0 failed") {
		t.Fatalf("backfill: %v\n%s", err, out)
	}
	out, err = runCLI(t, "backfill", "--purge-plaintext")
	if err != nil || !strings.Contains(out, "25 already matched") || !strings.Contains(out, "✓ purge: plaintext cleared on 25 rows, 0 kept") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
}
