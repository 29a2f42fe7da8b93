package bundle

import (
	"os"
	"path/filepath"
	"runtime"
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
