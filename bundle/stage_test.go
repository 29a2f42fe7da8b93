package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestStageCommitAbort(t *testing.T) {
	s := goodSpec("1.2.3")
	tests := []struct {
		name      string
		commit    bool
		installed bool
	}{
		{"aborted", false, false},
		{"committed", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			st, err := Stage(context.Background(), bytes.NewReader(s.archive(t)), dir, testKey().Public(), s.sig(t), Limits{})
			if err != nil {
				t.Fatalf("Stage: %v", err)
			}
			// Staged, not installed: only the temporary folder exists.
			if _, err := Verify(filepath.Join(dir, "1.2.3"), testKey().Public()); err == nil {
				t.Fatal("Verify after Stage: got nil, want not installed before Commit")
			}
			if tt.commit {
				if _, err := st.Commit(nil); err != nil {
					t.Fatalf("Commit: %v", err)
				}
			}
			st.Abort()
			st.Abort() // idempotent
			_, err = Verify(filepath.Join(dir, "1.2.3"), testKey().Public())
			if got := err == nil; got != tt.installed {
				t.Errorf("Verify: got %v, want installed %v", err, tt.installed)
			}
			if !tt.installed {
				assertNothingInstalled(t, dir)
			}
			if _, err := st.Commit(nil); err == nil {
				t.Error("second Commit: got nil, want an error")
			}
		})
	}
}

func TestStageBadBundleLeavesNothing(t *testing.T) {
	s := goodSpec("1.2.3")
	data := s.archive(t)
	dir := t.TempDir()
	// Cut in the middle, as a broken connection would.
	if _, err := Stage(context.Background(), &failingReader{data: data, n: len(data) / 2}, dir, testKey().Public(), s.sig(t), Limits{}); err == nil {
		t.Fatal("Stage of a cut stream: got nil, want an error")
	}
	assertNothingInstalled(t, dir)
}

func TestCommitTeachesVerifier(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no change time or inode: a Verifier hashes every time here")
	}
	dir := t.TempDir()
	s := goodSpec("1.2.3")
	st, err := Stage(context.Background(), bytes.NewReader(s.archive(t)), dir, testKey().Public(), s.sig(t), Limits{})
	if err != nil {
		t.Fatalf("Stage: %v", err)
	}
	defer st.Abort()
	var vr Verifier
	m, err := st.Commit(&vr)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	vdir := filepath.Join(dir, "1.2.3")
	if _, err := vr.Verify(vdir, testKey().Public()); err != nil {
		t.Fatalf("Verify after Commit: %v", err)
	}
	if vr.reads != 0 {
		t.Errorf("Verify after Commit hashed %d files, want 0: they were hashed as they were written", vr.reads)
	}
	// A file changed after the install (same size) is read, and caught.
	must(t, os.WriteFile(filepath.Join(vdir, "README.txt"), []byte("Calamari 9.9.9\n"), 0o644))
	if _, err := vr.Verify(vdir, testKey().Public()); err == nil {
		t.Error("Verify after a change: got nil, want an error")
	}
	if len(m.Files) == 0 {
		t.Fatal("the test bundle has no files")
	}
}
