package vault

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// Blob layout (DESIGN §4):
//
//	version (1 byte) ‖ key id (4 bytes, big endian) ‖ nonce (24 bytes) ‖ ciphertext+tag
//
// The header is also part of the associated data, so changing the version
// or the key id fails authentication rather than selecting another key.
const (
	blobVersion   byte = 1
	headerSize         = 1 + 4
	blobOverhead       = headerSize + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
	adDomain           = "credgate/ad/v1"
	maxBindingLen      = 1 << 16
)

// Binding ties a blob to the row and column it is stored in. It is the
// AEAD's associated data: a blob copied into another row, column, user or
// platform fails to open.
type Binding struct {
	Table    string
	Column   string
	RowID    string
	UserID   string
	Platform string
}

// Errors from Open. They never carry key material or plaintext.
var (
	ErrUnknownKey       = errors.New("blob is sealed under a key id that is not configured")
	ErrMalformedBlob    = errors.New("blob is malformed")
	ErrDecryptionFailed = errors.New("blob failed authentication: wrong key, wrong row, or tampered")
)

// Undecryptable reports whether err is about the blob itself (a wrong or
// missing key, a tampered or malformed blob), not about reading it: the
// account needs the user to connect again, not a retry.
func Undecryptable(err error) bool {
	return errors.Is(err, ErrDecryptionFailed) || errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrMalformedBlob)
}

// Seal encrypts plaintext under the primary key's subkey for purpose.
func (k *Keyring) Seal(purpose Purpose, plaintext []byte, b Binding) ([]byte, error) {
	e := k.keys[k.primary]
	aead, err := e.aeadFor(purpose)
	if err != nil {
		return nil, err
	}
	blob := make([]byte, headerSize+chacha20poly1305.NonceSizeX, blobOverhead+len(plaintext))
	blob[0] = blobVersion
	binary.BigEndian.PutUint32(blob[1:headerSize], e.id)
	rand.Read(blob[headerSize:])
	ad, err := associatedData(blob[:headerSize], b)
	if err != nil {
		return nil, err
	}
	defer adPool.Put(ad)
	return aead.Seal(blob, blob[headerSize:], plaintext, *ad), nil
}

// Open decrypts a blob sealed by Seal with any key of the ring, and returns
// the id of the key it was sealed with.
func (k *Keyring) Open(purpose Purpose, blob []byte, b Binding) ([]byte, uint32, error) {
	if len(blob) < blobOverhead || blob[0] != blobVersion {
		return nil, 0, ErrMalformedBlob
	}
	id := binary.BigEndian.Uint32(blob[1:headerSize])
	e, ok := k.keys[id]
	if !ok {
		return nil, id, fmt.Errorf("%w (key id %d; add it to %s)", ErrUnknownKey, id, EnvPreviousKeys)
	}
	aead, err := e.aeadFor(purpose)
	if err != nil {
		return nil, id, err
	}
	ad, err := associatedData(blob[:headerSize], b)
	if err != nil {
		return nil, id, err
	}
	defer adPool.Put(ad)
	nonce := blob[headerSize : headerSize+chacha20poly1305.NonceSizeX]
	plain, err := aead.Open(nil, nonce, blob[headerSize+chacha20poly1305.NonceSizeX:], *ad)
	if err != nil {
		return nil, id, ErrDecryptionFailed
	}
	return plain, id, nil
}

// BlobKeyID reads the key id from a blob's header without decrypting it.
func BlobKeyID(blob []byte) (uint32, bool) {
	if len(blob) < blobOverhead || blob[0] != blobVersion {
		return 0, false
	}
	return binary.BigEndian.Uint32(blob[1:headerSize]), true
}

// adPool recycles associated-data buffers: building one per Seal and Open
// was a third of the wrapper's cost over the raw AEAD.
var adPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// associatedData is the header followed by each binding field with a
// length prefix, so ("ab","c") and ("a","bc") differ. The caller returns
// the buffer to adPool.
func associatedData(header []byte, b Binding) (*[]byte, error) {
	fields := [...]string{adDomain, b.Table, b.Column, b.RowID, b.UserID, b.Platform}
	for _, f := range fields {
		if len(f) > maxBindingLen {
			return nil, errors.New("vault: binding field too long")
		}
	}
	buf := adPool.Get().(*[]byte)
	ad := append((*buf)[:0], header...)
	for _, f := range fields {
		ad = binary.BigEndian.AppendUint32(ad, uint32(len(f)))
		ad = append(ad, f...)
	}
	*buf = ad
	return buf, nil
}
