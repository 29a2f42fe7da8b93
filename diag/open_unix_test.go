//go:build !windows

package diag

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOpenInsideFollowsNoLink: a link as the file, or as a folder on the
// way, to a file outside the folder or to one inside it, is refused,
// and so are a FIFO and a folder; a plain file inside is read.
func TestOpenInsideFollowsNoLink(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(outside, []byte("root:secret-hash"), 0o600)
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "Logs"), 0o700)
	os.WriteFile(filepath.Join(dir, "Logs", "agent.log"), []byte("a line"), 0o600)
	os.WriteFile(filepath.Join(dir, "agent.json"), []byte(`{"proxy":"http://u:p@h"}`), 0o600)
	os.Symlink(outside, filepath.Join(dir, "Logs", "out.log"))
	os.Symlink(filepath.Join(dir, "agent.json"), filepath.Join(dir, "Logs", "in.log"))
	os.Symlink(filepath.Dir(outside), filepath.Join(dir, "Linked"))
	if err := syscall.Mkfifo(filepath.Join(dir, "Logs", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rel, want string
	}{
		{"Logs/agent.log", ""},
		{"Logs/out.log", "symbolic link"},
		{"Logs/in.log", "symbolic link"},
		{"Linked/shadow", "symbolic link"},
		{"Logs/fifo", "not a regular file"},
		{"Logs", "not a regular file"},
		{"../shadow", "not a path inside"},
		{"Logs/none", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			f, _, err := OpenInside(dir, tt.rel)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want the file", err)
				}
				f.Close()
				return
			}
			if err == nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Fatalf("got the file (%q), want an error saying %q", b, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}
