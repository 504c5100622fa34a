package vault

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// The environment variables a keyring is read from.
const (
	EnvMasterKey    = "ENCRYPTION_MASTER_KEY"
	EnvMasterKeyID  = "ENCRYPTION_MASTER_KEY_ID"
	EnvPreviousKeys = "ENCRYPTION_PREVIOUS_KEYS"
)

const keygenHint = "generate one with `caddy credgate keygen`"

// placeholders are values people paste from examples instead of a key.
var placeholders = []string{
	"<generate-secure-key>", "generate-secure-key", "changeme", "change-me", "change_me",
	"your-key-here", "your_key_here", "<your-key>", "secret", "password", "todo", "xxx",
}

// Purpose names what a subkey encrypts. Each master key yields one
// independent subkey per purpose, so a blob sealed for one column can never
// be opened as another.
type Purpose string

// The purposes credgate uses; the strings are the HKDF info and must never
// change (DESIGN §4).
const (
	PurposeCredentials Purpose = "credgate/social_accounts.credentials/v1"
	PurposeVerifier    Purpose = "credgate/oauth_states.verifier/v1"
	// PurposeStateMAC keys the MAC that lets credgate recognise the OAuth
	// states it issued without a database lookup.
	PurposeStateMAC Purpose = "credgate/oauth_states.mac/v1"
	// purposeFingerprint derives the public fingerprint stored in
	// encryption_keys.
	purposeFingerprint Purpose = "credgate/encryption_keys.fingerprint/v1"
)

// aeadPurposes are the purposes with an encryption subkey; an array so the
// per-call lookup is an index, not a map hash.
var aeadPurposes = [...]Purpose{PurposeCredentials, PurposeVerifier}

func (e *keyEntry) aeadFor(p Purpose) (cipher.AEAD, error) {
	for i, q := range aeadPurposes {
		if q == p {
			return e.aead[i], nil
		}
	}
	return nil, fmt.Errorf("vault: no subkey for purpose %q", p)
}

// KeyConfig is where a keyring comes from: the environment or config values.
type KeyConfig struct {
	// MasterKey is base64 of 32 bytes; it encrypts everything new.
	MasterKey string
	// MasterKeyID identifies MasterKey inside blobs. Default 1.
	MasterKeyID uint32
	// PreviousKeys are decrypt-only keys, "id:base64" pairs separated by
	// commas, kept while a rotation rewraps old blobs.
	PreviousKeys string
}

// KeyConfigFromEnv reads ENCRYPTION_MASTER_KEY, ENCRYPTION_MASTER_KEY_ID and
// ENCRYPTION_PREVIOUS_KEYS.
func KeyConfigFromEnv() (KeyConfig, error) {
	cfg := KeyConfig{MasterKey: os.Getenv(EnvMasterKey), PreviousKeys: os.Getenv(EnvPreviousKeys)}
	if raw := strings.TrimSpace(os.Getenv(EnvMasterKeyID)); raw != "" {
		id, err := ParseKeyID(raw)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", EnvMasterKeyID, err)
		}
		cfg.MasterKeyID = id
	}
	return cfg, nil
}

// Keyring holds the master keys and their derived subkeys. It is safe for
// concurrent use and never prints key material.
type Keyring struct {
	primary uint32
	keys    map[uint32]*keyEntry
}

type keyEntry struct {
	id          uint32
	aead        [len(aeadPurposes)]cipher.AEAD
	macKey      []byte
	fingerprint []byte
}

// NewKeyring validates cfg and derives every subkey once. It fails closed:
// a missing, malformed, short, constant or placeholder key, or a duplicate
// id, is refused with an error that names the variable.
func NewKeyring(cfg KeyConfig) (*Keyring, error) {
	if cfg.MasterKeyID == 0 {
		cfg.MasterKeyID = 1
	}
	primary, err := decodeKey(EnvMasterKey, cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	k := &Keyring{primary: cfg.MasterKeyID, keys: map[uint32]*keyEntry{}}
	if err := k.add(cfg.MasterKeyID, primary, EnvMasterKey); err != nil {
		return nil, err
	}
	for i, item := range strings.Split(cfg.PreviousKeys, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name := fmt.Sprintf("%s entry %d", EnvPreviousKeys, i+1)
		rawID, rawKey, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("%s: want id:base64-key", name)
		}
		id, err := ParseKeyID(rawID)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		material, err := decodeKey(name, rawKey)
		if err != nil {
			return nil, err
		}
		if err := k.add(id, material, name); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// KeyringFromEnv is NewKeyring(KeyConfigFromEnv()).
func KeyringFromEnv() (*Keyring, error) {
	cfg, err := KeyConfigFromEnv()
	if err != nil {
		return nil, err
	}
	return NewKeyring(cfg)
}

func (k *Keyring) add(id uint32, material []byte, name string) error {
	if _, dup := k.keys[id]; dup {
		return fmt.Errorf("%s: key id %d is used twice; give each key its own id", name, id)
	}
	for _, other := range k.keys {
		// Comparing fingerprints, not keys: the same key under two ids
		// would make "rotation" a no-op.
		if hmac.Equal(other.fingerprint, derive(material, purposeFingerprint)) {
			return fmt.Errorf("%s: key id %d holds the same key as id %d; %s", name, id, other.id, keygenHint)
		}
	}
	e := &keyEntry{id: id}
	for i, p := range aeadPurposes {
		aead, err := chacha20poly1305.NewX(derive(material, p))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		e.aead[i] = aead
	}
	e.macKey = derive(material, PurposeStateMAC)
	e.fingerprint = derive(material, purposeFingerprint)
	k.keys[id] = e
	return nil
}

// PrimaryID is the id of the key new blobs are sealed with.
func (k *Keyring) PrimaryID() uint32 { return k.primary }

// IDs lists every key id, primary first.
func (k *Keyring) IDs() []uint32 {
	ids := []uint32{k.primary}
	for id := range k.keys {
		if id != k.primary {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids[1:])
	return ids
}

// StateMACKey is the primary key's subkey for MACing OAuth states.
func (k *Keyring) StateMACKey() []byte { return k.keys[k.primary].macKey }

// StateMACKeys lists the MAC subkeys of every key, primary first, so states
// issued just before a rotation still verify.
func (k *Keyring) StateMACKeys() [][]byte {
	var out [][]byte
	for _, id := range k.IDs() {
		out = append(out, k.keys[id].macKey)
	}
	return out
}

// String never shows key material.
func (k *Keyring) String() string {
	return fmt.Sprintf("vault.Keyring{primary: %d, keys: %v}", k.primary, k.IDs())
}

// GoString never shows key material.
func (k *Keyring) GoString() string { return k.String() }

func derive(master []byte, p Purpose) []byte {
	key, err := hkdf.Key(sha256.New, master, nil, string(p), chacha20poly1305.KeySize)
	if err != nil {
		// Only possible for an output longer than 255*32 bytes.
		panic("vault: hkdf: " + err.Error())
	}
	return key
}

func decodeKey(name, raw string) ([]byte, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, fmt.Errorf("%s is not set: %s", name, keygenHint)
	}
	if slices.Contains(placeholders, strings.ToLower(raw)) || strings.HasPrefix(raw, "<") {
		return nil, fmt.Errorf("%s is a placeholder, not a key: %s", name, keygenHint)
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(raw); err != nil {
			return nil, fmt.Errorf("%s is not valid base64: %s", name, keygenHint)
		}
	}
	if len(key) != MasterKeySize {
		return nil, fmt.Errorf("%s must decode to exactly %d bytes, got %d: %s", name, MasterKeySize, len(key), keygenHint)
	}
	if constant(key) {
		return nil, fmt.Errorf("%s has every byte equal, which is not a random key: %s", name, keygenHint)
	}
	return key, nil
}

func constant(b []byte) bool {
	for _, c := range b[1:] {
		if c != b[0] {
			return false
		}
	}
	return true
}

// ParseKeyID reads a key id strictly: a whole number from 1, nothing
// else ("2abc", "0x10" and " 2 " with inner junk are refused). The
// server's master_key_id and every command use it.
func ParseKeyID(raw string) (uint32, error) {
	id, err := strconv.ParseUint(strings.TrimSpace(raw), 10, 32)
	if err != nil || id == 0 {
		return 0, errors.New("key id must be a whole number from 1 to 4294967295")
	}
	return uint32(id), nil
}
