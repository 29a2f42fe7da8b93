package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Endorsements. Agents pin the coordinator's certificate by thumbprint,
// and learn a new one over a session when the coordinator rotates. An
// agent away for two rotations would know neither certificate the
// coordinator still serves; so a rotated certificate carries an
// endorsement: the coordinator's signing key, which agents pinned at
// registration, signing the certificate's public key. An agent that does
// not know a certificate's thumbprint accepts it when the endorsement
// checks, and pins it.

// oidEndorsement is the certificate extension holding the endorsement.
// It sits under 2.25 (ITU-T X.667, OIDs anyone may make from random
// numbers, so none is registered); crypto/x509 parses arcs of up to 31
// bits, so the arc is 31 random bits rather than a whole UUID.
var oidEndorsement = asn1.ObjectIdentifier{2, 25, 1714284073, 1}

// endorsementBytes are what the signing key signs: the certificate's
// SubjectPublicKeyInfo, hashed.
func endorsementBytes(spki []byte) []byte {
	sum := sha256.Sum256(spki)
	return []byte("tendril certificate endorsement v1\n" + hex.EncodeToString(sum[:]) + "\n")
}

// NewEndorsedIdentity is NewIdentity with the certificate's public key
// endorsed by signer.
func NewEndorsedIdentity(commonName string, signer *SigningKey) (*Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	sig, err := asn1.Marshal(signer.Sign(endorsementBytes(spki)))
	if err != nil {
		return nil, fmt.Errorf("encode endorsement: %w", err)
	}
	return newIdentity(commonName, key, []pkix.Extension{{Id: oidEndorsement, Value: sig}})
}

// ErrNotEndorsed means a certificate carries no endorsement, or one the
// signing key did not make.
var ErrNotEndorsed = errors.New("certificate is not endorsed by the pinned signing key")

// CheckEndorsement reports whether cert's public key is endorsed by the
// signing key signingKeyHex (as Public returns it).
func CheckEndorsement(cert *x509.Certificate, signingKeyHex string) error {
	if signingKeyHex == "" {
		return fmt.Errorf("%w: no signing key is pinned", ErrNotEndorsed)
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidEndorsement) {
			continue
		}
		var sig []byte
		if rest, err := asn1.Unmarshal(ext.Value, &sig); err != nil || len(rest) > 0 {
			return fmt.Errorf("%w: malformed endorsement", ErrNotEndorsed)
		}
		if err := Verify(signingKeyHex, endorsementBytes(cert.RawSubjectPublicKeyInfo), sig); err != nil {
			return fmt.Errorf("%w: %v", ErrNotEndorsed, err)
		}
		now := time.Now()
		if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			return fmt.Errorf("%w: outside its validity (%s to %s)", ErrNotEndorsed, cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
		}
		return nil
	}
	return fmt.Errorf("%w: it carries no endorsement", ErrNotEndorsed)
}

// VerifyPinnedOrEndorsed is VerifyPinned that also accepts a leaf whose
// public key signingKey (read at each handshake; "" accepts none this way)
// endorsed, and then calls learned with its thumbprint, so the caller pins
// it.
func VerifyPinnedOrEndorsed(pins *Pins, signingKey func() string, learned func(thumbprint string)) func(tls.ConnectionState) error {
	pinned := VerifyPinned(pins)
	return func(cs tls.ConnectionState) error {
		err := pinned(cs)
		if err == nil || !errors.Is(err, ErrUntrusted) || signingKey == nil {
			return err
		}
		if eerr := CheckEndorsement(cs.PeerCertificates[0], signingKey()); eerr != nil {
			return fmt.Errorf("%w (%v)", err, eerr)
		}
		if learned != nil {
			learned(Thumbprint(cs.PeerCertificates[0].Raw))
		}
		return nil
	}
}
