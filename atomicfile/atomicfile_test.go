package atomicfile

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestWrite(t *testing.T) {
	for _, write := range []struct {
		name string
		f    func(string, []byte, os.FileMode) error
	}{{"Write", Write}, {"Replace", Replace}} {
		t.Run(write.name, func(t *testing.T) { testWrite(t, write.f) })
	}
}

func testWrite(t *testing.T, write func(string, []byte, os.FileMode) error) {
	for _, tc := range []struct {
		name   string
		before []byte // nil: no file before
		data   []byte
		perm   os.FileMode
	}{
		{"new file", nil, []byte("one"), 0o600},
		{"replaces", []byte("old content, longer"), []byte("new"), 0o644},
		{"empty", []byte("old"), nil, 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if tc.before != nil {
				if err := os.WriteFile(path, tc.before, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := write(path, tc.data, tc.perm); err != nil {
				t.Fatalf("write: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != string(tc.data) {
				t.Errorf("content: got %q (%v), want %q", got, err, tc.data)
			}
			if st, err := os.Stat(path); err != nil {
				t.Fatal(err)
			} else if runtime.GOOS != "windows" && st.Mode().Perm() != tc.perm {
				t.Errorf("mode: got %v, want %v", st.Mode().Perm(), tc.perm)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("folder: got %d entries, want only the file (no temporary left)", len(entries))
			}
		})
	}
}

func TestWriteMissingFolder(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "no", "f"), []byte("x"), 0o600); err == nil {
		t.Error("Write into a missing folder: got nil error, want one")
	}
}
