package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityRoundTrip(t *testing.T) {
	dir := t.TempDir()
	id, err := NewIdentity("agent-1")
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	if err := id.Save(cert, key); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o600 {
		t.Errorf("key mode: got %o, want 600", got)
	}
	back, err := LoadIdentity(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if back.Thumbprint != id.Thumbprint {
		t.Errorf("thumbprint: got %s, want %s", back.Thumbprint, id.Thumbprint)
	}
	if len(id.Thumbprint) != 64 || strings.ToLower(id.Thumbprint) != id.Thumbprint {
		t.Errorf("thumbprint %q: want 64 lower-case hex digits", id.Thumbprint)
	}
	if _, err := ParseSelfSigned(id.DER()); err != nil {
		t.Errorf("ParseSelfSigned: %v", err)
	}
}

func TestLoadIdentityMismatch(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewIdentity("a")
	b, _ := NewIdentity("b")
	if err := a.Save(filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(filepath.Join(dir, "a.crt"), filepath.Join(dir, "b.key")); err == nil {
		t.Fatal("got nil error loading a certificate with another key, want an error")
	}
	if _, err := LoadIdentity(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "b.key")); err == nil {
		t.Fatal("got nil error for a missing file, want an error")
	}
}

func TestParseSelfSignedRejectsTampered(t *testing.T) {
	id, _ := NewIdentity("a")
	der := append([]byte(nil), id.DER()...)
	der[len(der)-5] ^= 0xff // inside the signature
	if _, err := ParseSelfSigned(der); err == nil {
		t.Fatal("got nil error for a tampered certificate, want an error")
	}
	if _, err := ParseSelfSigned([]byte("junk")); err == nil {
		t.Fatal("got nil error for junk, want an error")
	}
}

func TestNormalizeThumbprint(t *testing.T) {
	id, _ := NewIdentity("a")
	upperColons := strings.ToUpper(id.Thumbprint[:2]) + ":" + strings.ToUpper(id.Thumbprint[2:])
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{id.Thumbprint, id.Thumbprint, false},
		{" " + upperColons + "\n", id.Thumbprint, false},
		{"abc", "", true},
		{strings.Repeat("g", 64), "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := NormalizeThumbprint(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("NormalizeThumbprint(%q): got %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestVerifyPinned(t *testing.T) {
	a, _ := NewIdentity("a")
	b, _ := NewIdentity("b")
	pins := NewPins(a.Thumbprint)
	verify := VerifyPinned(pins)
	tests := []struct {
		name string
		cs   tls.ConnectionState
		want error
	}{
		{"no certificate", tls.ConnectionState{}, ErrNoCertificate},
		{"trusted", csFor(a), nil},
		{"untrusted", csFor(b), ErrUntrusted},
	}
	for _, tt := range tests {
		err := verify(tt.cs)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	pins.Set(a.Thumbprint, b.Thumbprint)
	if err := verify(csFor(b)); err != nil {
		t.Errorf("after adding b: got %v, want nil", err)
	}
	if got := len(pins.List()); got != 2 {
		t.Errorf("pins: got %d, want 2", got)
	}
}

func csFor(id *Identity) tls.ConnectionState {
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{id.Certificate.Leaf}}
}

func TestSigningKey(t *testing.T) {
	dir := t.TempDir()
	k, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "signing.key")
	if err := k.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("manifest")
	sig := back.Sign(msg)
	if err := Verify(k.Public(), msg, sig); err != nil {
		t.Errorf("Verify: got %v, want nil", err)
	}
	if err := Verify(k.Public(), []byte("other"), sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify other message: got %v, want ErrBadSignature", err)
	}
	if err := Verify("zz", msg, sig); err == nil {
		t.Error("Verify with a malformed key: got nil, want an error")
	}
}

func TestSealedSigningKey(t *testing.T) {
	dir := t.TempDir()
	k, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	plain, sealed := filepath.Join(dir, "signing.key"), filepath.Join(dir, "signing.sealed")
	if err := k.Save(plain); err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal([]byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sealed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "damaged")
	os.WriteFile(damaged, bytes.Replace(b, []byte("Time: 3"), []byte("Time: x"), 1), 0o600)
	tests := []struct {
		name, path, pass, want string
	}{
		{"plain", plain, "", ""},
		{"sealed", sealed, "correct horse", ""},
		{"sealed without a passphrase", sealed, "", "is sealed: give its passphrase"},
		{"wrong passphrase", sealed, "wrong horse", "wrong passphrase"},
		{"plain with a passphrase", plain, "x", "is not sealed, but a passphrase was given"},
		{"damaged headers", damaged, "correct horse", "damaged headers"},
		{"missing", filepath.Join(dir, "nope"), "", "no such file"},
	}
	for _, tt := range tests {
		got, err := LoadSigningKeyFile(tt.path, []byte(tt.pass))
		if tt.want == "" {
			if err != nil || got.Public() != k.Public() {
				t.Errorf("%s: got %v, want the key", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error saying %q", tt.name, err, tt.want)
		}
	}
	if _, err := k.Seal(nil); err == nil {
		t.Error("seal with an empty passphrase: got nil error")
	}
}

func TestEndorsedIdentity(t *testing.T) {
	signer, _ := NewSigningKey()
	other, _ := NewSigningKey()
	endorsed, err := NewEndorsedIdentity("tendril-server", signer)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := NewIdentity("tendril-server")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   *Identity
		key  string
		want string
	}{
		{"endorsed by the pinned key", endorsed, signer.Public(), ""},
		{"endorsed by another key", endorsed, other.Public(), "not endorsed"},
		{"no signing key pinned", endorsed, "", "no signing key is pinned"},
		{"not endorsed", plain, signer.Public(), "carries no endorsement"},
	}
	for _, tt := range tests {
		var learned string
		verify := VerifyPinnedOrEndorsed(NewPins("someone-else"), func() string { return tt.key }, func(th string) { learned = th })
		err := verify(tls.ConnectionState{PeerCertificates: []*x509.Certificate{tt.id.Certificate.Leaf}})
		if tt.want == "" {
			if err != nil || learned != tt.id.Thumbprint {
				t.Errorf("%s: got %v, learned %q; want accepted and %s learned", tt.name, err, learned, tt.id.Thumbprint)
			}
			continue
		}
		if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tt.want) || learned != "" {
			t.Errorf("%s: got %v (learned %q), want untrusted saying %q", tt.name, err, learned, tt.want)
		}
	}
	// A pinned thumbprint needs no endorsement.
	if err := VerifyPinnedOrEndorsed(NewPins(plain.Thumbprint), nil, nil)(tls.ConnectionState{PeerCertificates: []*x509.Certificate{plain.Certificate.Leaf}}); err != nil {
		t.Errorf("pinned: got %v", err)
	}
}
