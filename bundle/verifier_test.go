package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestVerifierReadsOnlyWhatChanged(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no change time or inode: a Verifier hashes every time here")
	}
	dir := t.TempDir()
	s := goodSpec("1.2.3")
	m := mustInstall(t, s, dir)
	vdir := filepath.Join(dir, "1.2.3")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	vr := &Verifier{MaxAge: time.Hour, now: func() time.Time { return now }}
	reads := func() int {
		vr.mu.Lock()
		defer vr.mu.Unlock()
		return vr.reads
	}
	verify := func(step string) {
		t.Helper()
		if _, err := vr.Verify(vdir, testKey().Public()); err != nil {
			t.Fatalf("%s: Verify: got %v, want nil", step, err)
		}
	}
	files := len(m.Files)

	steps := []struct {
		name      string
		do        func()
		wantReads int // files hashed by this step's Verify
	}{
		{"first verify", func() {}, files},
		{"unchanged", func() {}, 0},
		{"unchanged, by Scan", nil, 0},
		{"one file rewritten with the same bytes", func() {
			b, err := os.ReadFile(filepath.Join(vdir, "README.txt"))
			must(t, err)
			writeFile(t, vdir, "README.txt", 0o644, string(b))
		}, 1},
		{"just under the maximum age", func() { now = now.Add(time.Hour - time.Second) }, 0},
		{"past the maximum age", func() { now = now.Add(2 * time.Second) }, files},
	}
	for _, st := range steps {
		before := reads()
		if st.do == nil {
			for _, status := range vr.Scan(dir, testKey().Public()) {
				if status.Err != nil {
					t.Fatalf("%s: Scan: %s: %v", st.name, status.Version, status.Err)
				}
			}
		} else {
			st.do()
			verify(st.name)
		}
		if got := reads() - before; got != st.wantReads {
			t.Errorf("%s: got %d files hashed, want %d", st.name, got, st.wantReads)
		}
	}
}

// TestVerifierChecksSignatureOnce checks that a Verifier checks the
// signature of a version's manifest once, and again whenever the manifest,
// its signature or the key differ: a changed signature is refused, and a
// caller changing the manifest it was given changes nothing remembered.
func TestVerifierChecksSignatureOnce(t *testing.T) {
	dir := t.TempDir()
	mustInstall(t, goodSpec("1.2.3"), dir)
	vdir := filepath.Join(dir, "1.2.3")
	vr := &Verifier{}
	checks := func() int {
		vr.mu.Lock()
		defer vr.mu.Unlock()
		return vr.checks
	}
	sigPath := filepath.Join(vdir, SignatureName)
	goodSig, err := os.ReadFile(sigPath)
	must(t, err)
	steps := []struct {
		name       string
		do         func()
		key        string
		wantErr    error
		wantChecks int // signatures checked by this step's Verify
	}{
		{"first verify", func() {}, testKey().Public(), nil, 1},
		{"the same bytes", func() {}, testKey().Public(), nil, 0},
		{"another key", func() {}, otherKey().Public(), ErrBadSignature, 0},
		{"the right key again, after a failure forgot it", func() {}, testKey().Public(), nil, 1},
		{"a changed signature", func() {
			bad := slices.Clone(goodSig)
			bad[0] ^= 0xff
			must(t, os.WriteFile(sigPath, bad, 0o644))
		}, testKey().Public(), ErrBadSignature, 0},
		{"the signature restored", func() { must(t, os.WriteFile(sigPath, goodSig, 0o644)) }, testKey().Public(), nil, 1},
	}
	for _, st := range steps {
		before := checks()
		st.do()
		m, err := vr.Verify(vdir, st.key)
		if !errors.Is(err, st.wantErr) {
			t.Fatalf("%s: Verify: got %v, want %v", st.name, err, st.wantErr)
		}
		if got := checks() - before; got != st.wantChecks {
			t.Errorf("%s: got %d signatures checked and remembered, want %d", st.name, got, st.wantChecks)
		}
		if err == nil {
			m.Files[0].SHA256 = "changed by the caller"
		}
	}
	if _, err := vr.Verify(vdir, testKey().Public()); err != nil {
		t.Errorf("after a caller changed its copy: Verify: got %v, want nil", err)
	}
}
