package airgap

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/protocol"
)

// sources returns a Calamari bundle and an agent package signed with key,
// as a coordinator holds them.
func sources(t *testing.T, key *certs.SigningKey) []Source {
	t.Helper()
	path := servertest.CalamariBundle(t, "1.2.0", 4096)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, manifest, err := bundle.Check(context.Background(), bytes.NewReader(raw), bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	bin := append([]byte("\x7fELF"), bytes.Repeat([]byte("agent"), 2000)...)
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	desc := protocol.AgentPackage{Version: "2.0.0", OS: "linux", Arch: "amd64", SHA256: sum(bin), Size: int64(len(bin))}
	open := func(b []byte) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	return []Source{
		{Item: Item{Kind: KindCalamari, Version: "1.2.0", Size: int64(len(raw)), SHA256: sum(raw), Signature: bundle.Sign(key, manifest)}, Open: open(raw)},
		{Item: Item{Kind: KindAgent, Version: "2.0.0", OS: "linux", Arch: "amd64", Size: desc.Size, SHA256: desc.SHA256,
			Signature: key.Sign(desc.SigningBytes())}, Open: open(bin)},
	}
}

func export(t *testing.T, key *certs.SigningKey, src []Source) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, key, "1.0.0", src); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	key, _ := certs.NewSigningKey()
	src := sources(t, key)
	m, paths, err := Read(context.Background(), bytes.NewReader(export(t, key, src)), t.TempDir(), key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if m.SigningKey != key.Public() || m.SourceVersion != "1.0.0" || len(m.Items) != 2 || len(paths) != 2 {
		t.Fatalf("got key %s version %s items %d paths %d, want the source's and 2", m.SigningKey, m.SourceVersion, len(m.Items), len(paths))
	}
	for i, p := range paths {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := src[i].Open()
		want, _ := io.ReadAll(rc)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: the extracted bytes differ", src[i].Name())
		}
	}
}

func TestReadRefusesBadInput(t *testing.T) {
	key, _ := certs.NewSigningKey()
	other, _ := certs.NewSigningKey()
	src := sources(t, key)
	good := export(t, key, src)
	changed := func(at int) []byte {
		b := bytes.Clone(good)
		for i := range 8 {
			b[at+i] ^= 0xff
		}
		return b
	}
	// An agent package whose own signature is another key's, in an export
	// whose manifest is signed properly: a package the source never
	// signed.
	forged := sources(t, key)
	desc := protocol.AgentPackage{Version: forged[1].Version, OS: forged[1].OS, Arch: forged[1].Arch, SHA256: forged[1].SHA256, Size: forged[1].Size}
	forged[1].Signature = other.Sign(desc.SigningBytes())
	forgedBundle := sources(t, key)
	forgedBundle[0].Signature = []byte("not a signature")

	tests := []struct {
		name   string
		in     []byte
		expect string
		want   error
		msg    string
	}{
		{"empty", nil, "", ErrDamaged, "not a gzip file"},
		{"truncated", good[:len(good)/2], "", ErrDamaged, "truncated or corrupt"},
		{"cut before the end", good[:len(good)-4], "", ErrDamaged, "truncated or corrupt"},
		{"bytes changed early", changed(40), "", ErrDamaged, ""},
		{"bytes changed in the middle", changed(len(good) / 2), "", ErrDamaged, ""},
		{"bytes changed near the end", changed(len(good) - 30), "", ErrDamaged, ""},
		{"another source than expected", good, other.Public(), ErrUntrustedSource, "expected " + other.Public()},
		{"agent package signed by another key", export(t, key, forged), "", nil, "agent 2.0.0 for linux/amd64: its signature does not verify"},
		{"bundle signature not one", export(t, key, forgedBundle), "", nil, "Calamari 1.2.0: bundle manifest signature does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, paths, err := Read(context.Background(), bytes.NewReader(tt.in), t.TempDir(), tt.expect)
			if err == nil || paths != nil {
				t.Fatalf("got %v and %d paths, want a refusal", err, len(paths))
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %q, want it to say %q", err, tt.msg)
			}
		})
	}
}

// FuzzRead: no input makes Read panic or return items without an error.
func FuzzRead(f *testing.F) {
	key, _ := certs.NewSigningKey()
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, key, "1.0.0", nil); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, paths, err := Read(context.Background(), bytes.NewReader(b), t.TempDir(), "")
		if err == nil && len(paths) != len(m.Items) {
			t.Fatalf("got %d paths for %d items", len(paths), len(m.Items))
		}
	})
}

// TestReadRefusesOversizeItems: an item's declared size is bounded before
// a byte of it is written, so a small file cannot inflate to fill the
// disk.
func TestReadRefusesOversizeItems(t *testing.T) {
	key, _ := certs.NewSigningKey()
	m := Manifest{Format: Format, SigningKey: key.Public(), Items: []Item{
		{Kind: KindAgent, Version: "2.0.0", OS: "linux", Arch: "amd64", File: "agent/2.0.0/linux-amd64", Size: 1 << 40, SHA256: strings.Repeat("0", 64)},
	}}
	raw, _ := json.Marshal(m)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range []struct {
		name string
		b    []byte
	}{{manifestName, raw}, {sigName, key.Sign(raw)}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o600, Size: int64(len(e.b)), Typeflag: tar.TypeReg})
		tw.Write(e.b)
	}
	tw.Close()
	gz.Close()
	dir := t.TempDir()
	_, _, err := Read(context.Background(), &buf, dir, "")
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "size 1099511627776, want 0 to") {
		t.Fatalf("got %v, want the size refused", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("got %d files written, want none", len(entries))
	}
}
