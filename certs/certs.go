// Package certs creates and loads the keys and self-signed certificates that
// Tendril's agents and coordinator identify themselves with, computes their
// thumbprints, and builds the pinned-peer checks both sides use instead of
// a certificate authority.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/atomicfile"
)

// DefaultValidity is how long a generated certificate is valid. Trust comes
// from the pinned thumbprint, not from the validity period, so it is long:
// rotation is an operator's (or automation's) choice, not a deadline.
const DefaultValidity = 20 * 365 * 24 * time.Hour

// Errors callers branch on.
var (
	// ErrNoCertificate means the peer presented no certificate.
	ErrNoCertificate = errors.New("peer presented no certificate")
	// ErrUntrusted means the peer's certificate thumbprint is not pinned.
	ErrUntrusted = errors.New("peer certificate is not trusted")
)

// Identity is a private key and the self-signed certificate for it.
type Identity struct {
	Certificate tls.Certificate
	// Thumbprint is the lower-case hex SHA-256 of the certificate DER.
	Thumbprint string
}

// Thumbprint returns the lower-case hex SHA-256 of a DER certificate.
func Thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// NormalizeThumbprint lower-cases a thumbprint, strips ':' separators and
// surrounding space, and checks that it is 64 hex digits, so that values
// pasted from other tools are accepted.
func NormalizeThumbprint(s string) (string, error) {
	t := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(t) != sha256.Size*2 {
		return "", fmt.Errorf("thumbprint %q: want %d hex digits, got %d", s, sha256.Size*2, len(t))
	}
	if _, err := hex.DecodeString(t); err != nil {
		return "", fmt.Errorf("thumbprint %q: not hex", s)
	}
	return t, nil
}

// NewIdentity generates an ECDSA P-256 key and a self-signed certificate
// with the given common name.
func NewIdentity(commonName string) (*Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return newIdentity(commonName, key, nil)
}

// newIdentity makes the self-signed certificate of key, with extra
// extensions.
func newIdentity(commonName string, key *ecdsa.PrivateKey, extra []pkix.Extension) (*Identity, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour), // tolerate clock skew between hosts
		NotAfter:              now.Add(DefaultValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		ExtraExtensions:       extra,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return identityFrom(der, key)
}

func identityFrom(der []byte, key *ecdsa.PrivateKey) (*Identity, error) {
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("certificate does not match private key")
	}
	return &Identity{
		Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		Thumbprint:  Thumbprint(der),
	}, nil
}

// DER returns the certificate in DER form.
func (id *Identity) DER() []byte { return id.Certificate.Certificate[0] }

// Save writes the certificate to certPath and the key to keyPath (0600),
// each atomically, so a crash never leaves a half-written key.
func (id *Identity) Save(certPath, keyPath string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(id.Certificate.PrivateKey)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.DER()}), 0o644)
}

// LoadIdentity reads a certificate and key written by Save.
func LoadIdentity(certPath, keyPath string) (*Identity, error) {
	der, err := readPEM(certPath, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	keyDER, err := readPEM(keyPath, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", keyPath, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s: want ECDSA, got %T", keyPath, k)
	}
	id, err := identityFrom(der, key)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", certPath, err)
	}
	return id, nil
}

func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("read %s: no PEM %s block", path, typ)
	}
	return block.Bytes, nil
}

// ParseSelfSigned parses a DER certificate and checks that it is an ECDSA
// certificate signed by its own key. It is how a peer proves possession of
// a new key when it presents a rotated certificate over an authenticated
// session.
func ParseSelfSigned(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("certificate key: want ECDSA, got %T", c.PublicKey)
	}
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		return nil, fmt.Errorf("certificate is not self-signed by its key: %w", err)
	}
	return c, nil
}
