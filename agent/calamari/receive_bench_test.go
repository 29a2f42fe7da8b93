package calamari

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// BenchmarkReceive is the agent's side of a push of a 32 MiB bundle of
// random bytes, from the bytes' arrival to the version installed
// (Success.txt synced and the folder renamed), without the network: the
// CPU and disk work figure 5's push waits for after the wire. It runs a
// push with CalamariPush.ManifestOnly (from a coordinator of this
// release) and one without (from an older one, which the agent hashes
// whole as well).
//
//	go test -run '^$' -bench Receive -count 5 ./agent/calamari/
func BenchmarkReceive(b *testing.B) {
	key, err := certs.NewSigningKey()
	if err != nil {
		b.Fatal(err)
	}
	src := b.TempDir()
	payload := make([]byte, 32<<20)
	rand.Read(payload)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "bin"), 0o755))
	must(os.WriteFile(filepath.Join(src, "bin", "calamari"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(src, "payload.bin"), payload, 0o644))
	bundles := map[string][]byte{}
	sigs := map[string][]byte{}
	version := func(i int) string { return fmt.Sprintf("1.0.%d", i%4) }
	for i := range 4 {
		var buf bytes.Buffer
		m, err := bundle.Pack(context.Background(), &buf, "calamari", version(i), src, map[string]string{runtime.GOOS + "/" + runtime.GOARCH: "bin/calamari"})
		must(err)
		raw, err := m.Encode()
		must(err)
		bundles[version(i)], sigs[version(i)] = buf.Bytes(), key.Sign(raw)
	}
	for _, manifestOnly := range []bool{true, false} {
		b.Run(fmt.Sprintf("manifest only %v", manifestOnly), func(b *testing.B) {
			dir := b.TempDir()
			st, err := New(Config{Dir: dir, SigningKey: key.Public(), Keep: 1})
			must(err)
			b.SetBytes(int64(len(bundles[version(0)])))
			i := 0
			for b.Loop() {
				v := version(i)
				i++
				// The version is not installed: the previous loop pruned it.
				os.RemoveAll(filepath.Join(dir, v))
				sum := sha256.Sum256(bundles[v])
				req := protocol.CalamariPush{Version: v, Signature: sigs[v], Keep: 1, ManifestOnly: manifestOnly,
					Bundle: protocol.Transfer{Size: int64(len(bundles[v])), SHA256: hex.EncodeToString(sum[:])}}
				p, err := st.BeginPush(context.Background(), req)
				must(err)
				if _, err := p.Receive(context.Background(), bytes.NewReader(bundles[v])); err != nil {
					b.Fatal(err)
				}
				p.Close()
			}
		})
	}
}
