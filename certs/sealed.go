package certs

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/crypto/argon2"
)

// sealedKeyType is the PEM type of a signing key sealed under a
// passphrase.
const sealedKeyType = "TENDRIL SEALED SIGNING KEY"

// The argon2id cost of a sealed key: opened once per coordinator start, so
// it can be slow for whoever guesses passphrases.
const (
	sealTime    = 3
	sealMemory  = 64 << 10 // KiB
	sealThreads = 2
)

// ErrPassphrase means a sealed signing key did not open: a wrong
// passphrase, or a damaged file.
var ErrPassphrase = errors.New("wrong passphrase or damaged sealed signing key")

// Seal returns the key as a PEM block encrypted (AES-256-GCM) under a key
// derived from passphrase with argon2id, for keeping the signing key away
// from the data folder.
func (k *SigningKey) Seal(passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("seal signing key: the passphrase is empty")
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, fmt.Errorf("seal signing key: %w", err)
	}
	salt := make([]byte, 16)
	rand.Read(salt) // never fails; see crypto/rand
	aead, err := sealAEAD(passphrase, salt, sealTime, sealMemory, sealThreads)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	block := &pem.Block{Type: sealedKeyType, Headers: map[string]string{
		"KDF":     "argon2id",
		"Time":    strconv.Itoa(sealTime),
		"Memory":  strconv.Itoa(sealMemory),
		"Threads": strconv.Itoa(sealThreads),
		"Salt":    base64.StdEncoding.EncodeToString(salt),
		"Nonce":   base64.StdEncoding.EncodeToString(nonce),
	}, Bytes: aead.Seal(nil, nonce, der, []byte(sealedKeyType))}
	return pem.EncodeToMemory(block), nil
}

func sealAEAD(passphrase, salt []byte, time, memory uint32, threads uint8) (cipher.AEAD, error) {
	block, err := aes.NewCipher(argon2.IDKey(passphrase, salt, time, memory, threads, 32))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// LoadSigningKeyFile reads a signing key written by Save, or by Seal when
// passphrase is given.
func LoadSigningKeyFile(path string, passphrase []byte) (*SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	switch {
	case block == nil:
		return nil, fmt.Errorf("signing key %s: not a PEM file", path)
	case block.Type == "PRIVATE KEY" && len(passphrase) > 0:
		return nil, fmt.Errorf("signing key %s is not sealed, but a passphrase was given: seal it (tendril-server signing-key seal), or give no passphrase", path)
	case block.Type == "PRIVATE KEY":
		return parseSigningKey(path, block.Bytes)
	case block.Type != sealedKeyType:
		return nil, fmt.Errorf("signing key %s: a PEM %s block, want PRIVATE KEY or %s", path, block.Type, sealedKeyType)
	case len(passphrase) == 0:
		return nil, fmt.Errorf("signing key %s is sealed: give its passphrase (--signing-key-passphrase-file)", path)
	}
	h := block.Headers
	num := func(name string, max uint64) (uint64, error) {
		v, err := strconv.ParseUint(h[name], 10, 32)
		if err != nil || v == 0 || v > max {
			return 0, fmt.Errorf("signing key %s: header %s is %q", path, name, h[name])
		}
		return v, nil
	}
	t, err1 := num("Time", 100)
	m, err2 := num("Memory", 4<<20)
	p, err3 := num("Threads", 255)
	salt, err4 := base64.StdEncoding.DecodeString(h["Salt"])
	nonce, err5 := base64.StdEncoding.DecodeString(h["Nonce"])
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil || h["KDF"] != "argon2id" {
		return nil, fmt.Errorf("signing key %s: damaged headers: %v", path, err)
	}
	aead, err := sealAEAD(passphrase, salt, uint32(t), uint32(m), uint8(p))
	if err != nil {
		return nil, err
	}
	if len(nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("signing key %s: damaged headers: nonce of %d bytes", path, len(nonce))
	}
	der, err := aead.Open(nil, nonce, block.Bytes, []byte(sealedKeyType))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, ErrPassphrase)
	}
	return parseSigningKey(path, der)
}

func parseSigningKey(path string, der []byte) (*SigningKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: want Ed25519, got %T", path, k)
	}
	return &SigningKey{priv: priv}, nil
}
