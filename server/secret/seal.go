package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sealer encrypts and authenticates values the coordinator must keep but
// never store in plaintext (tasks' sensitive variables), with AES-256-GCM
// under the data folder's master key. Every node of a cluster has the same
// master key, so any node opens what another sealed.
type Sealer struct {
	aead cipher.AEAD
}

// ErrSealed means a sealed value cannot be opened: it was changed, it
// belongs elsewhere (another context), or another master key sealed it.
var ErrSealed = errors.New("sealed value cannot be opened")

// LoadSealer reads the master key file: 32 bytes in hex.
func LoadSealer(path string) (*Sealer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("load master key %s: want 64 hex digits", path)
	}
	return NewSealer(key)
}

// NewSealer returns a Sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("master key: %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts value for context (what it is and whose, e.g. a task's id
// and a variable's name): it opens only for the same context, so a sealed
// value moved to another row of the database does not open there.
func (s *Sealer) Seal(value []byte, context string) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(value)+s.aead.Overhead())
	rand.Read(nonce) // never fails; see New
	return s.aead.Seal(nonce, nonce, value, []byte(context))
}

// Open returns the value Seal sealed for context.
func (s *Sealer) Open(sealed []byte, context string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrSealed
	}
	v, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(context))
	if err != nil {
		return nil, ErrSealed
	}
	return v, nil
}
