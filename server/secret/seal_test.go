package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, []byte("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSealer(path)
	if err != nil {
		t.Fatal(err)
	}
	value := []byte("hunter2")
	sealed := s.Seal(value, "task/1/DB_PASSWORD")
	if bytes.Contains(sealed, value) {
		t.Fatal("sealed value holds the plaintext")
	}
	if got, err := s.Open(sealed, "task/1/DB_PASSWORD"); err != nil || !bytes.Equal(got, value) {
		t.Fatalf("Open: got %q, %v; want %q", got, err, value)
	}
	if bytes.Equal(s.Seal(value, "c"), s.Seal(value, "c")) {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
	other, _ := NewSealer(bytes.Repeat([]byte{1}, 32))
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name    string
		s       *Sealer
		sealed  []byte
		context string
	}{
		{"other context", s, sealed, "task/2/DB_PASSWORD"},
		{"other key", other, sealed, "task/1/DB_PASSWORD"},
		{"changed", s, flipped, "task/1/DB_PASSWORD"},
		{"short", s, sealed[:5], "task/1/DB_PASSWORD"},
	}
	for _, tt := range tests {
		if _, err := tt.s.Open(tt.sealed, tt.context); !errors.Is(err, ErrSealed) {
			t.Errorf("%s: got %v, want ErrSealed", tt.name, err)
		}
	}
	for _, bad := range []string{"", "zz", "0011"} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := LoadSealer(path); err == nil {
			t.Errorf("master key %q: got nil error", bad)
		}
	}
}
