package certs

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/tendrildeploy/tendril/atomicfile"
)

// ErrBadSignature means a signature did not verify.
var ErrBadSignature = errors.New("signature does not verify")

// SigningKey is the coordinator's Ed25519 key for signing Calamari
// manifests and agent packages. Agents learn the public half at
// registration.
type SigningKey struct {
	priv ed25519.PrivateKey
}

// NewSigningKey generates an Ed25519 signing key.
func NewSigningKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return &SigningKey{priv: priv}, nil
}

// Sign signs msg.
func (k *SigningKey) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// Public returns the public key as lower-case hex, the form agents store.
func (k *SigningKey) Public() string {
	return hex.EncodeToString(k.priv.Public().(ed25519.PublicKey))
}

// Save writes the key as PKCS#8 PEM with mode 0600, atomically.
func (k *SigningKey) Save(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("marshal signing key: %w", err)
	}
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// LoadSigningKey reads a key written by Save.
func LoadSigningKey(path string) (*SigningKey, error) {
	return LoadSigningKeyFile(path, nil)
}

// Verify checks sig over msg against a hex public key from Public.
func Verify(publicHex string, msg, sig []byte) error {
	pub, err := hex.DecodeString(publicHex)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("verify: public key is not %d bytes of hex", ed25519.PublicKeySize)
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		return ErrBadSignature
	}
	return nil
}
