package vault

import (
	"crypto/rand"
	"encoding/base64"
)

// MasterKeySize is the length in bytes of every master key.
const MasterKeySize = 32

// NewMasterKey returns a fresh master key in the form ENCRYPTION_MASTER_KEY
// expects: standard base64 of MasterKeySize random bytes.
func NewMasterKey() string {
	b := make([]byte, MasterKeySize)
	// crypto/rand.Read never fails on supported platforms (Go 1.24+).
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}
