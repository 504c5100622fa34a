package vault_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/credgate/credgate/vault"
)

func key(b byte) string {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b + byte(i)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func mustKeyring(t testing.TB, cfg vault.KeyConfig) *vault.Keyring {
	t.Helper()
	k, err := vault.NewKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyringFailsClosed(t *testing.T) {
	t.Parallel()
	allSame := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	cases := []struct {
		name string
		cfg  vault.KeyConfig
		want string
	}{
		{"missing", vault.KeyConfig{}, "ENCRYPTION_MASTER_KEY is not set"},
		{"blank", vault.KeyConfig{MasterKey: "   "}, "ENCRYPTION_MASTER_KEY is not set"},
		{"not base64", vault.KeyConfig{MasterKey: "not*base64!"}, "ENCRYPTION_MASTER_KEY is not valid base64"},
		{"short", vault.KeyConfig{MasterKey: short}, "ENCRYPTION_MASTER_KEY must decode to exactly 32 bytes, got 16"},
		{"long", vault.KeyConfig{MasterKey: base64.StdEncoding.EncodeToString(make([]byte, 33))}, "exactly 32 bytes, got 33"},
		{"all bytes equal", vault.KeyConfig{MasterKey: allSame}, "ENCRYPTION_MASTER_KEY has every byte equal"},
		{"all zero", vault.KeyConfig{MasterKey: base64.StdEncoding.EncodeToString(make([]byte, 32))}, "every byte equal"},
		{"seed placeholder", vault.KeyConfig{MasterKey: "<generate-secure-key>"}, "ENCRYPTION_MASTER_KEY is a placeholder"},
		{"changeme", vault.KeyConfig{MasterKey: "changeme"}, "is a placeholder"},
		{"duplicate id", vault.KeyConfig{MasterKey: key(1), PreviousKeys: "1:" + key(50)}, "key id 1 is used twice"},
		{"duplicate previous id", vault.KeyConfig{MasterKey: key(1), MasterKeyID: 3, PreviousKeys: "2:" + key(50) + ",2:" + key(90)}, "key id 2 is used twice"},
		{"same key twice", vault.KeyConfig{MasterKey: key(1), MasterKeyID: 2, PreviousKeys: "1:" + key(1)}, "holds the same key as id 2"},
		{"previous malformed", vault.KeyConfig{MasterKey: key(1), MasterKeyID: 2, PreviousKeys: "1=" + key(9)}, "ENCRYPTION_PREVIOUS_KEYS entry 1: want id:base64-key"},
		{"previous bad id", vault.KeyConfig{MasterKey: key(1), MasterKeyID: 2, PreviousKeys: "zero:" + key(9)}, "key id must be a whole number"},
		{"previous short", vault.KeyConfig{MasterKey: key(1), MasterKeyID: 2, PreviousKeys: "1:" + short}, "ENCRYPTION_PREVIOUS_KEYS entry 1 must decode to exactly 32 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vault.NewKeyring(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "caddy credgate keygen") && !strings.Contains(tc.want, "used twice") &&
				!strings.Contains(tc.want, "whole number") && !strings.Contains(tc.want, "want id:") {
				t.Errorf("err %q does not say how to generate a key", err)
			}
		})
	}
}

func TestKeyringFromEnv(t *testing.T) {
	t.Setenv(vault.EnvMasterKey, key(1))
	t.Setenv(vault.EnvMasterKeyID, "7")
	t.Setenv(vault.EnvPreviousKeys, " 5:"+key(40)+" , 6:"+key(80))
	k, err := vault.KeyringFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if k.PrimaryID() != 7 || fmt.Sprint(k.IDs()) != "[7 5 6]" {
		t.Errorf("primary %d ids %v", k.PrimaryID(), k.IDs())
	}
	t.Setenv(vault.EnvMasterKeyID, "-1")
	if _, err := vault.KeyringFromEnv(); err == nil || !strings.Contains(err.Error(), vault.EnvMasterKeyID) {
		t.Errorf("bad id: %v", err)
	}
}

func TestKeyringDoesNotPrintKeys(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	for _, out := range []string{fmt.Sprint(k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k)} {
		if strings.Contains(out, key(1)) || strings.Contains(out, "aead") {
			t.Errorf("keyring printed internals: %s", out)
		}
	}
}

var binding = vault.Binding{Table: "social_accounts", Column: "credentials_encrypted", RowID: "row-1", UserID: "user-1", Platform: "twitter"}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 9})
	plain := []byte(`{"access_token":"tok"}`)
	blob, err := k.Seal(vault.PurposeCredentials, plain, binding)
	if err != nil {
		t.Fatal(err)
	}
	// version ‖ key id ‖ nonce ‖ ciphertext+tag
	if blob[0] != 1 || !bytes.Equal(blob[1:5], []byte{0, 0, 0, 9}) || len(blob) != 1+4+24+len(plain)+16 {
		t.Errorf("blob layout: % x (len %d)", blob[:5], len(blob))
	}
	if bytes.Contains(blob, plain) {
		t.Error("blob contains the plaintext")
	}
	got, id, err := k.Open(vault.PurposeCredentials, blob, binding)
	if err != nil || !bytes.Equal(got, plain) || id != 9 {
		t.Fatalf("open = %q, %d, %v", got, id, err)
	}
	again, _ := k.Seal(vault.PurposeCredentials, plain, binding)
	if bytes.Equal(again, blob) {
		t.Error("two seals produced the same blob: nonce is not random")
	}
}

func TestFlippingAnyByteFails(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	blob, _ := k.Seal(vault.PurposeCredentials, []byte("token-set"), binding)
	for i := range blob {
		for _, bit := range []byte{0x01, 0x80} {
			tampered := bytes.Clone(blob)
			tampered[i] ^= bit
			if _, _, err := k.Open(vault.PurposeCredentials, tampered, binding); err == nil {
				t.Fatalf("flipping bit %#x of byte %d still decrypts", bit, i)
			}
		}
	}
	if _, _, err := k.Open(vault.PurposeCredentials, blob[:len(blob)-1], binding); err == nil {
		t.Error("truncated blob decrypts")
	}
}

func TestBlobIsBoundToItsRow(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	blob, _ := k.Seal(vault.PurposeCredentials, []byte("token-set"), binding)
	others := map[string]vault.Binding{}
	for name, mutate := range map[string]func(*vault.Binding){
		"row":      func(b *vault.Binding) { b.RowID = "row-2" },
		"user":     func(b *vault.Binding) { b.UserID = "user-2" },
		"platform": func(b *vault.Binding) { b.Platform = "facebook" },
		"table":    func(b *vault.Binding) { b.Table = "oauth_states" },
		"column":   func(b *vault.Binding) { b.Column = "code_verifier_encrypted" },
		"shifted":  func(b *vault.Binding) { b.RowID, b.UserID = "row-1u", "ser-1" },
	} {
		b := binding
		mutate(&b)
		others[name] = b
	}
	for name, b := range others {
		if _, _, err := k.Open(vault.PurposeCredentials, blob, b); !errors.Is(err, vault.ErrDecryptionFailed) {
			t.Errorf("blob opened with another %s: %v", name, err)
		}
	}
	if _, _, err := k.Open(vault.PurposeVerifier, blob, binding); err == nil {
		t.Error("blob opened under another purpose's subkey")
	}
}

func TestPreviousKeyStillDecrypts(t *testing.T) {
	t.Parallel()
	old := mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 1})
	blob, _ := old.Seal(vault.PurposeCredentials, []byte("old secret"), binding)

	rotated := mustKeyring(t, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	got, id, err := rotated.Open(vault.PurposeCredentials, blob, binding)
	if err != nil || string(got) != "old secret" || id != 1 {
		t.Fatalf("open with previous key: %q %d %v", got, id, err)
	}
	fresh, _ := rotated.Seal(vault.PurposeCredentials, []byte("new"), binding)
	if id, _ := vault.BlobKeyID(fresh); id != 2 {
		t.Errorf("new blobs sealed under key %d, want primary 2", id)
	}
}

func TestUnknownKeyIDIsAClearError(t *testing.T) {
	t.Parallel()
	other := mustKeyring(t, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 42})
	blob, _ := other.Seal(vault.PurposeCredentials, []byte("x"), binding)
	k := mustKeyring(t, vault.KeyConfig{MasterKey: key(100)})
	_, id, err := k.Open(vault.PurposeCredentials, blob, binding)
	if !errors.Is(err, vault.ErrUnknownKey) || id != 42 || !strings.Contains(err.Error(), "key id 42") ||
		!strings.Contains(err.Error(), vault.EnvPreviousKeys) {
		t.Errorf("err = %v (id %d), want ErrUnknownKey naming id 42 and %s", err, id, vault.EnvPreviousKeys)
	}
}

func TestIssuedStatesRecogniseThemselves(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, vault.KeyConfig{MasterKey: key(1)})
	s := k.IssueState().Reveal()
	if len(s) != vault.StateLength || !strings.HasPrefix(s, "cg1.") || !k.RecognizeState(s) {
		t.Fatalf("issued state %q not recognised", s)
	}
	if k.IssueState().Reveal() == s {
		t.Error("two states are equal")
	}
	rotated := mustKeyring(t, vault.KeyConfig{MasterKey: key(100), MasterKeyID: 2, PreviousKeys: "1:" + key(1)})
	if !rotated.RecognizeState(s) {
		t.Error("a state issued before a key rotation is no longer recognised")
	}
	other := mustKeyring(t, vault.KeyConfig{MasterKey: key(50)})
	tampered := s[:10] + string(s[10]^1) + s[11:]
	for name, bad := range map[string]string{
		"other key": s, "tampered": tampered, "empty": "", "legacy app state": "a1b2c3d4e5",
		"too long": s + "x", "sql": "cg1.' OR 1=1 --", "same length, wrong chars": "cg1." + strings.Repeat("!", vault.StateLength-4),
	} {
		k := k
		if name == "other key" {
			k = other
		}
		if k.RecognizeState(bad) {
			t.Errorf("%s recognised", name)
		}
	}
}
