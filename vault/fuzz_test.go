package vault_test

import (
	"bytes"
	"testing"

	"github.com/credgate/credgate/vault"
)

// Invariant: Open never panics on arbitrary bytes, and never returns
// plaintext for a blob that differs from one Seal produced, whatever was
// changed: a byte flipped, cut, appended or the header edited.
func FuzzOpenBlob(f *testing.F) {
	keys := mustKeyring(f, vault.KeyConfig{MasterKey: key(1), MasterKeyID: 7, PreviousKeys: "3:" + key(3)})
	b := vault.Binding{Table: "social_accounts", Column: "credentials_encrypted", RowID: "row-1", UserID: "user-1", Platform: "twitter"}
	sealed, err := keys.Seal(vault.PurposeCredentials, []byte(`{"access_token":"a","refresh_token":"r"}`), b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, 0, byte(0))
	f.Add(sealed, 1, byte(1))
	f.Add(sealed, 4, byte(4))
	f.Add(sealed, len(sealed)-1, byte(0x80))
	f.Add([]byte{}, 0, byte(0))
	f.Add([]byte{1, 0, 0, 0, 7}, 0, byte(0))
	f.Fuzz(func(t *testing.T, blob []byte, at int, mask byte) {
		// Arbitrary bytes: no panic.
		keys.Open(vault.PurposeCredentials, blob, b)
		// The sealed blob, changed at one place (or cut, or extended).
		changed := bytes.Clone(sealed)
		switch {
		case len(blob) > 0 && at < 0:
			changed = append(changed, blob...)
		case at >= 0 && at < len(changed) && mask != 0:
			changed[at] ^= mask
		case at >= len(changed) && len(blob) == 0:
			changed = changed[:at%len(changed)]
		default:
			return
		}
		if bytes.Equal(changed, sealed) {
			return
		}
		if plain, _, err := keys.Open(vault.PurposeCredentials, changed, b); err == nil || plain != nil {
			t.Fatalf("a modified blob opened: %x", changed)
		}
	})
}

// Invariant: RecognizeState never panics, recognises every state the
// keyring issued, never a state another key issued (a string both
// recognise would be a MAC collision), and no change to an issued state.
func FuzzRecognizeState(f *testing.F) {
	keys := mustKeyring(f, vault.KeyConfig{MasterKey: key(1)})
	other := mustKeyring(f, vault.KeyConfig{MasterKey: key(2)})
	issued := keys.IssueState().Reveal()
	f.Add(issued, 0, byte(0))
	f.Add(other.IssueState().Reveal(), 5, byte(1))
	f.Add("cg1.", 0, byte(0))
	f.Add("", 0, byte(0))
	f.Add("cg1."+string(bytes.Repeat([]byte("A"), 43))+".", 3, byte(2))
	f.Fuzz(func(t *testing.T, raw string, at int, mask byte) {
		if keys.RecognizeState(raw) && other.RecognizeState(raw) {
			t.Fatalf("two keys recognise %q", raw)
		}
		if !keys.RecognizeState(issued) {
			t.Fatal("an issued state is not recognised")
		}
		if at < 0 || at >= len(issued) || mask == 0 {
			return
		}
		changed := []byte(issued)
		changed[at] ^= mask
		if keys.RecognizeState(string(changed)) {
			t.Fatalf("a changed state was recognised: %q", changed)
		}
	})
}
