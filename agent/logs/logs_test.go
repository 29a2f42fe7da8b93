package logs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileGetsJSONLinesAtLevel(t *testing.T) {
	no := false
	tests := []struct {
		level     string
		wantDebug bool
		wantErr   bool
	}{
		{"debug", true, false}, {"info", false, false}, {"", false, false}, {"loud", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "Logs", "agent.log")
			log, closeLog, err := New(Config{Level: tt.level, File: path, Console: &no})
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "--log-level") {
					t.Fatalf("got %v, want a --log-level error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Named("agent").Debug("quiet")
			log.Named("agent").Info("hello")
			closeLog()
			b, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			for _, l := range lines {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("not a JSON line: %q", l)
				}
			}
			if got := strings.Contains(string(b), "quiet"); got != tt.wantDebug {
				t.Fatalf("debug line present=%v, want %v:\n%s", got, tt.wantDebug, b)
			}
		})
	}
}

func TestUnwritableFileFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, _, err := New(Config{File: filepath.Join(file, "agent.log")}); err == nil {
		t.Fatal("a log file under a regular file: got no error")
	}
}
