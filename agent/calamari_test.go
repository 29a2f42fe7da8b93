package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// testScript stands in for Calamari. Its arguments are commands, run in
// order: "lines N" prints N numbered lines, "await FILE" waits until FILE
// exists (the test's way to hold a task running), "child" starts a child
// that sleeps and waits for it, "stubborn" the same with a child that
// ignores SIGTERM, "cat NAME" prints a pushed file, "long N"
// prints one line of N x's, "env"
// prints what the agent told it, "exit N" exits with N. Every run appends
// to the file "runs" in its task folder, so a test can count runs.
const testScript = `#!/bin/sh
echo run >> runs
echo "args: $*"
echo "to stderr" >&2
while [ $# -gt 0 ]; do
	case "$1" in
	lines) i=1; while [ "$i" -le "$2" ]; do echo "line $i"; i=$((i+1)); done; shift 2 ;;
	await) while [ ! -e "$2" ]; do sleep 0.01; done; shift 2 ;;
	child) sleep 1000 & echo $! > child.pid; echo $$ > main.pid; wait; shift ;;
	stubborn) sh -c 'trap "" TERM; exec sleep 1000' & echo $! > child.pid; echo $$ > main.pid; wait; shift ;;
	cat) cat "$TENDRIL_FILES/$2"; shift 2 ;;
	long) head -c "$2" /dev/zero | tr '\0' x; echo; shift 2 ;;
	env) echo "ticket=$TENDRIL_TICKET dir=$TENDRIL_TASK_DIR files=$TENDRIL_FILES home=$TENDRIL_HOME pwd=$(pwd)"; shift ;;
	exit) exit "$2" ;;
	*) shift ;;
	esac
done
`

// scriptPath is where the script sits inside a test bundle.
const scriptPath = "bin/calamari.sh"

// testBundle is a signed Calamari bundle and the push that offers it.
type testBundle struct {
	data []byte
	sig  []byte
	push protocol.CalamariPush
}

// newTestBundle packs testScript as Calamari version v for this
// platform and signs it with the coordinator's key.
func newTestBundle(t *testing.T, c *testCoordinator, v string) testBundle {
	t.Helper()
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, filepath.FromSlash(scriptPath)), []byte(testScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "README.txt"), []byte("Calamari "+v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m, err := bundle.Pack(context.Background(), &buf, "calamari", v, src, map[string]string{runtime.GOOS + "/" + runtime.GOARCH: scriptPath})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return signedBundle(buf.Bytes(), v, c.signer.Sign(raw))
}

func signedBundle(data []byte, v string, sig []byte) testBundle {
	return testBundle{data: data, sig: sig, push: protocol.CalamariPush{Version: v, Signature: sig, Bundle: transferOf(data)}}
}

func transferOf(b []byte) protocol.Transfer {
	sum := sha256.Sum256(b)
	return protocol.Transfer{Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
}

// pushBundle pushes b whole and returns the agent's answers.
func (c *testCoordinator) pushBundle(s *coordSession, b testBundle) (protocol.PushReady, protocol.CalamariInstalled, error) {
	var inst protocol.CalamariInstalled
	ready, err := c.push(s, protocol.TypeCalamariPush, b.push, b.data, -1, protocol.TypeCalamariInstalled, &inst)
	return ready, inst, err
}

// versionsOnDisk lists the version folders of the agent's Calamari folder
// and the partial pushes it keeps.
func versionsOnDisk(t *testing.T, home string) (versions, partials []string) {
	t.Helper()
	dir := filepath.Join(home, calamariDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			versions = append(versions, e.Name())
		}
	}
	parts, _ := os.ReadDir(filepath.Join(dir, ".partial"))
	for _, e := range parts {
		partials = append(partials, e.Name())
	}
	return versions, partials
}

func (c *testCoordinator) health(t *testing.T, s *coordSession) protocol.Health {
	t.Helper()
	var h protocol.Health
	if err := c.call(s, protocol.TypeHealthRequest, protocol.HealthRequest{}, protocol.TypeHealth, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func (c *testCoordinator) check(t *testing.T, s *coordSession, v string) protocol.CalamariState {
	t.Helper()
	var st protocol.CalamariState
	if err := c.call(s, protocol.TypeCalamariCheck, protocol.CalamariCheck{Version: v}, protocol.TypeCalamariState, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCalamariPushInstalls(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()

	if st := c.check(t, s, "1.0.0"); st.Installed || st.Problem != "not installed" {
		t.Errorf("check before the push: got %+v, want not installed", st)
	}
	b := newTestBundle(t, c, "1.0.0")
	ready, inst, err := c.pushBundle(s, b)
	if err != nil {
		t.Fatal(err)
	}
	if ready.Offset != 0 || ready.Done || inst.Version != "1.0.0" || len(inst.Pruned) != 0 {
		t.Errorf("push: got ready %+v installed %+v, want offset 0 and 1.0.0 installed", ready, inst)
	}
	if !exists(filepath.Join(home, calamariDir, "1.0.0", bundle.SuccessName)) {
		t.Errorf("%s missing after the push", bundle.SuccessName)
	}
	if st := c.check(t, s, "1.0.0"); !st.Installed || st.Problem != "" {
		t.Errorf("check after the push: got %+v, want installed", st)
	}
	if h := c.health(t, s); !slices.Equal(h.Calamari, []string{"1.0.0"}) || len(h.CalamariProblems) != 0 {
		t.Errorf("health: got calamari %v problems %v, want [1.0.0] and none", h.Calamari, h.CalamariProblems)
	}
	if _, partials := versionsOnDisk(t, home); len(partials) != 0 {
		t.Errorf("partial files left after the install: %v", partials)
	}

	// Pushed again: the agent already has it and asks for nothing.
	ready, _, err = c.pushBundle(s, b)
	if err != nil || !ready.Done {
		t.Errorf("second push: got %+v, %v; want Done", ready, err)
	}

	err = c.call(s, protocol.TypeCalamariCheck, protocol.CalamariCheck{Version: "../etc"}, protocol.TypeCalamariState, nil)
	if !protocol.IsCode(err, protocol.CodeBadRequest) {
		t.Errorf("check of a path: got %v, want %s", err, protocol.CodeBadRequest)
	}
}

func TestCalamariPushResumes(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()

	b := newTestBundle(t, c, "1.0.0")
	cut := int64(len(b.data) / 2)
	var inst protocol.CalamariInstalled
	ready, err := c.push(s, protocol.TypeCalamariPush, b.push, b.data, cut, protocol.TypeCalamariInstalled, &inst)
	if err != errCut || ready.Offset != 0 {
		t.Fatalf("cut push: got %+v, %v; want offset 0 and the cut", ready, err)
	}
	// The second push waits for the first to notice the cut, then resumes
	// after every byte that arrived.
	ready, inst, err = c.pushBundle(s, b)
	if err != nil {
		t.Fatal(err)
	}
	if ready.Offset != cut || inst.Version != "1.0.0" {
		t.Errorf("resumed push: got offset %d installed %+v, want offset %d and 1.0.0", ready.Offset, inst, cut)
	}
	if st := c.check(t, s, "1.0.0"); !st.Installed {
		t.Errorf("check after the resumed push: %+v", st)
	}
	if _, partials := versionsOnDisk(t, home); len(partials) != 0 {
		t.Errorf("partial files left after the install: %v", partials)
	}
}

// TestCalamariPushManifestOnly pushes the same bundles with and without
// CalamariPush.ManifestOnly (a coordinator of this release, and an older
// one): everything the signed manifest vouches for is refused alike,
// and a resume works alike; only bytes that are not the header's SHA-256
// but do make the signed bundle are refused by the hash of the older
// path and installed by the new one, which is what they are.
func TestCalamariPushManifestOnly(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()
	partialOf := func(b testBundle) string {
		return filepath.Join(home, calamariDir, ".partial", b.push.Bundle.SHA256+".part")
	}
	tests := []struct {
		name string
		// run pushes b (version v, not installed) and returns the error of
		// the push that counts.
		run func(t *testing.T, b testBundle) error
		// what that push must fail with, "" for none, with ManifestOnly
		// and without
		wantNew, wantOld string
	}{
		{name: "whole", run: func(t *testing.T, b testBundle) error {
			_, _, err := c.pushBundle(s, b)
			return err
		}},
		{name: "resumed after a cut", run: func(t *testing.T, b testBundle) error {
			cut := int64(len(b.data) / 2)
			if ready, err := c.push(s, protocol.TypeCalamariPush, b.push, b.data, cut, protocol.TypeCalamariInstalled, nil); err != errCut {
				t.Fatalf("cut push: got %+v, %v; want the cut", ready, err)
			}
			ready, _, err := c.pushBundle(s, b)
			if err == nil && ready.Offset != cut {
				t.Errorf("resumed push: got offset %d, want %d", ready.Offset, cut)
			}
			return err
		}},
		{name: "resumed from a damaged partial file", run: func(t *testing.T, b testBundle) error {
			cut := int64(len(b.data) / 2)
			if ready, err := c.push(s, protocol.TypeCalamariPush, b.push, b.data, cut, protocol.TypeCalamariInstalled, nil); err != errCut {
				t.Fatalf("cut push: got %+v, %v; want the cut", ready, err)
			}
			// The second push waits until the first noticed the cut, so
			// the damage is done once the file holds every byte sent.
			eventually(t, "the cut push's bytes on disk", func() bool { return protocol.PartialSize(partialOf(b)) == cut })
			// The first byte after the gzip header: the deflate stream's
			// first block header.
			damaged := bytes.Clone(b.data[:cut])
			damaged[10] ^= 0xff
			if err := os.WriteFile(partialOf(b), damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.pushBundle(s, b)
			return err
		}, wantNew: bundle.ErrCorrupt.Error(), wantOld: "SHA-256"},
		{name: "bytes differ from the header", run: func(t *testing.T, b testBundle) error {
			b.push.Bundle.SHA256 = strings.Repeat("00", 32)
			_, _, err := c.pushBundle(s, b)
			return err
		}, wantOld: "SHA-256"},
		{name: "truncated archive", run: func(t *testing.T, b testBundle) error {
			b = signedBundle(b.data[:len(b.data)-20], b.push.Version, b.sig)
			_, _, err := c.pushBundle(s, b)
			return err
		}, wantNew: "truncated", wantOld: "truncated"},
		{name: "a file changed", run: func(t *testing.T, b testBundle) error {
			// Re-packed with the script changed under the same signature.
			changed := repack(t, b, func(name string, content []byte) []byte {
				if name == scriptPath {
					return append(bytes.Clone(content), "# changed\n"...)
				}
				return content
			})
			_, _, err := c.pushBundle(s, signedBundle(changed, b.push.Version, b.sig))
			return err
		}, wantNew: scriptPath, wantOld: scriptPath},
	}
	version := 0
	for _, manifestOnly := range []bool{true, false} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("manifest only %v/%s", manifestOnly, tt.name), func(t *testing.T) {
				version++
				v := fmt.Sprintf("1.0.%d", version)
				b := newTestBundle(t, c, v)
				b.push.ManifestOnly = manifestOnly
				want := tt.wantOld
				if manifestOnly {
					want = tt.wantNew
				}
				err := tt.run(t, b)
				_, partials := versionsOnDisk(t, home)
				if want == "" {
					if err != nil {
						t.Fatalf("got %v, want it installed", err)
					}
					if st := c.check(t, s, v); !st.Installed {
						t.Errorf("check after the push: got %+v, want installed", st)
					}
				} else {
					if !protocol.IsCode(err, protocol.CodeBadRequest) || !strings.Contains(err.Error(), want) {
						t.Fatalf("got %v, want %s mentioning %q", err, protocol.CodeBadRequest, want)
					}
					if st := c.check(t, s, v); st.Installed {
						t.Errorf("check after a refused push: got %+v, want not installed", st)
					}
				}
				if len(partials) != 0 {
					t.Errorf("partial files left: %v, want none", partials)
				}
				if err != nil {
					// The next push starts over and installs it.
					if ready, _, err := c.pushBundle(s, b); err != nil || ready.Offset != 0 {
						t.Errorf("push after the refused one: got offset %d, %v; want offset 0 and installed", ready.Offset, err)
					}
				}
			})
		}
	}
}

// repack rewrites a bundle's archive with each entry's content passed
// through change, its headers kept but for the size.
func repack(t *testing.T, b testBundle, change func(name string, content []byte) []byte) []byte {
	t.Helper()
	gr, err := gzip.NewReader(bytes.NewReader(b.data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gr)
	var entries []tarEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, tarEntry{hdr, change(hdr.Name, content)})
	}
	return writeTarGz(t, entries)
}

// tarGz builds an archive from name/content pairs, in order.
func tarGz(t *testing.T, files ...[2]string) []byte {
	t.Helper()
	var entries []tarEntry
	for _, f := range files {
		entries = append(entries, tarEntry{&tar.Header{Typeflag: tar.TypeReg, Name: f[0], Mode: 0o644}, []byte(f[1])})
	}
	return writeTarGz(t, entries)
}

// tarEntry is one entry of an archive writeTarGz writes.
type tarEntry struct {
	hdr     *tar.Header
	content []byte
}

// writeTarGz writes the entries, in order, as a gzipped tar archive,
// each header's size set to its content's.
func writeTarGz(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		e.hdr.Size = int64(len(e.content))
		if err := tw.WriteHeader(e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCalamariPushRefusesBadBundles(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()
	good := newTestBundle(t, c, "1.0.0")
	other, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	// A manifest that lies about its one file's hash, properly signed.
	lying := bundle.Manifest{Name: "calamari", Version: "1.0.0", Entrypoints: map[string]string{runtime.GOOS + "/" + runtime.GOARCH: "run.sh"},
		Files: []bundle.File{{Path: "run.sh", Size: 5, Mode: 0o755, SHA256: strings.Repeat("ab", 32)}}}
	lyingRaw, err := lying.Encode()
	if err != nil {
		t.Fatal(err)
	}
	lyingData := tarGz(t, [2]string{bundle.ManifestName, string(lyingRaw)}, [2]string{"run.sh", "hello"})

	tests := []struct {
		name string
		push testBundle
		want string // in the error message
	}{
		{"signed by another key", signedBundle(good.data, "1.0.0", other.Sign([]byte("anything"))), "signature"},
		{"manifest lies about a hash", signedBundle(lyingData, "1.0.0", c.signer.Sign(lyingRaw)), "sha256"},
		{"truncated archive", signedBundle(good.data[:len(good.data)-20], "1.0.0", good.sig), "truncated"},
		{"pushed as another version", signedBundle(good.data, "2.0.0", good.sig), "1.0.0"},
		{"bytes differ from the header", func() testBundle {
			b := good
			b.push.Bundle.SHA256 = strings.Repeat("00", 32)
			return b
		}(), "SHA-256"},
		{"version is a path", func() testBundle {
			b := good
			b.push.Version = "../1.0.0"
			return b
		}(), "semantic version"},
		{"no signature", signedBundle(good.data, "1.0.0", nil), "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := c.pushBundle(s, tt.push)
			if !protocol.IsCode(err, protocol.CodeBadRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %s mentioning %q", err, protocol.CodeBadRequest, tt.want)
			}
			versions, partials := versionsOnDisk(t, home)
			if len(versions) != 0 || len(partials) != 0 {
				t.Errorf("after a refused push: got versions %v partials %v, want none", versions, partials)
			}
			// The agent keeps serving.
			if h := c.health(t, s); len(h.Calamari) != 0 {
				t.Errorf("health lists %v after a refused push", h.Calamari)
			}
		})
	}
	if _, inst, err := c.pushBundle(s, good); err != nil || inst.Version != "1.0.0" {
		t.Errorf("good push after the bad ones: got %+v, %v", inst, err)
	}
}

func TestCalamariDamageIsReportedAndRepaired(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()
	b := newTestBundle(t, c, "1.0.0")
	if _, _, err := c.pushBundle(s, b); err != nil {
		t.Fatal(err)
	}
	// What antivirus quarantine does.
	if err := os.Remove(filepath.Join(home, calamariDir, "1.0.0", filepath.FromSlash(scriptPath))); err != nil {
		t.Fatal(err)
	}
	st := c.check(t, s, "1.0.0")
	if st.Installed || !strings.Contains(st.Problem, scriptPath+" is missing") {
		t.Errorf("check: got %+v, want not installed because %s is missing", st, scriptPath)
	}
	h := c.health(t, s)
	if len(h.Calamari) != 0 || len(h.CalamariProblems) != 1 || !strings.HasPrefix(h.CalamariProblems[0], "1.0.0: ") || !strings.Contains(h.CalamariProblems[0], "missing") {
		t.Errorf("health: got calamari %v problems %q, want none and 1.0.0 damaged", h.Calamari, h.CalamariProblems)
	}
	// A task refuses the damaged version.
	err := c.call(s, protocol.TypeTaskStart, protocol.TaskStart{Ticket: "t1", Calamari: "1.0.0"}, protocol.TypeTaskStarted, nil)
	if !protocol.IsCode(err, protocol.CodeBadRequest) || !strings.Contains(err.Error(), "Calamari 1.0.0 is not installed or damaged") {
		t.Errorf("task on a damaged version: got %v, want %s", err, protocol.CodeBadRequest)
	}
	// The next push repairs it.
	ready, inst, err := c.pushBundle(s, b)
	if err != nil || ready.Done || inst.Version != "1.0.0" {
		t.Fatalf("repairing push: got %+v %+v, %v", ready, inst, err)
	}
	if st := c.check(t, s, "1.0.0"); !st.Installed {
		t.Errorf("check after the repair: %+v", st)
	}
}
