package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/version"
)

// updatesAPI stands in for a coordinator answering GET /api/updates.
func updatesAPI(t *testing.T, u api.UpdatesView) map[string]string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/api/updates" || r.Header.Get("Authorization") != "Bearer k" {
			writeTestJSON(w, http.StatusNotFound, api.APIError{Error: "unexpected " + r.Method + " " + r.URL.Path})
			return
		}
		writeTestJSON(w, http.StatusOK, u)
	}))
	t.Cleanup(srv.Close)
	return map[string]string{envURL: srv.URL, envAPIKey: "k"}
}

func TestVersionCheck(t *testing.T) {
	ctx := context.Background()
	checked := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)

	vars := updatesAPI(t, api.UpdatesView{Current: "1.4.0", Latest: "1.5.0", UpdateAvailable: true, Breaking: true,
		NotesURL: "https://example.invalid/1.5.0", CheckedAt: &checked})
	code, stdout, stderr := cli(t, ctx, vars, "version", "--check")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 0 || stderr != "" || lines[0] != version.Version ||
		!strings.Contains(stdout, "Tendril 1.5.0 is available (you run 1.4.0): https://example.invalid/1.5.0\n") ||
		!strings.Contains(stdout, "This release has breaking changes: read the notes before upgrading.") {
		t.Fatalf("newer, breaking: %d %q %q", code, stdout, stderr)
	}

	vars = updatesAPI(t, api.UpdatesView{Current: version.Version, CheckedAt: &checked})
	code, stdout, stderr = cli(t, ctx, vars, "version", "--check")
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, version.Version+"\n") || !strings.Contains(stdout, "Up to date") ||
		strings.Contains(stdout, "available") || strings.Contains(stdout, "coordinator runs") {
		t.Fatalf("up to date: %d %q %q", code, stdout, stderr)
	}

	code, stdout, _ = cli(t, ctx, vars, "version", "--check", "--json")
	var out struct {
		Version string          `json:"version"`
		Updates api.UpdatesView `json:"updates"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &out) != nil || out.Version != version.Version || out.Updates.CheckedAt == nil {
		t.Fatalf("--json: %d %q", code, stdout)
	}

	// A feed that fails is said, but the check itself worked.
	vars = updatesAPI(t, api.UpdatesView{Current: version.Version, Error: "read release feed: HTTP 404 Not Found"})
	code, stdout, _ = cli(t, ctx, vars, "version", "--check")
	if code != 0 || !strings.Contains(stdout, "Could not check for updates: read release feed: HTTP 404 Not Found") {
		t.Fatalf("feed failure: %d %q", code, stdout)
	}

	// No coordinator: one line, exit 1.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	code, stdout, stderr = cli(t, ctx, map[string]string{envURL: closed, envAPIKey: "k"}, "version", "--check")
	if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 ||
		!strings.HasPrefix(stderr, "tendril-server: ") || !strings.Contains(stderr, "not running") {
		t.Fatalf("unreachable: %d %q %q", code, stdout, stderr)
	}
}

// TestVersionCheckAgainstCoordinator runs a coordinator with a feed file
// and asks it through --data.
func TestVersionCheckAgainstCoordinator(t *testing.T) {
	feed := filepath.Join(t.TempDir(), "releases.json")
	os.WriteFile(feed, []byte(`{"releases": [
		{"version": "999.0.0", "date": "2026-11-01", "notes_url": "https://example.invalid/999", "notes": "big", "breaking": false},
		{"version": "998.0.0", "breaking": true},
		{"version": "not-a-version"}
	]}`), 0o644)
	dir := filepath.Join(t.TempDir(), "data")
	if code, _, stderr := cli(t, context.Background(), nil, "init", "--data", dir); code != 0 {
		t.Fatalf("init: %d %q", code, stderr)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var runErr syncBuffer
	go func() {
		done <- Run(ctx, []string{"run", "--data", dir, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
			"--release-feed", feed, "--release-check-interval", "1h"},
			Env{Stdout: &bytes.Buffer{}, Stderr: &runErr, Getenv: func(string) string { return "" }})
	}()
	t.Cleanup(func() {
		stop()
		if code := <-done; code != 0 {
			t.Errorf("run exited %d: %s", code, runErr.String())
		}
	})
	var stdout, stderr string
	waitFor(t, "the notice", func() bool {
		var code int
		code, stdout, stderr = cli(t, context.Background(), nil, "version", "--check", "--data", dir)
		return code == 0 && strings.Contains(stdout, "is available")
	})
	want := "Tendril 999.0.0 is available (you run " + version.Version + "): https://example.invalid/999\n" +
		"This release has breaking changes: read the notes before upgrading.\n"
	if stdout != version.Version+"\n"+want || stderr != "" {
		t.Fatalf("got %q %q, want %q", stdout, stderr, want)
	}
}

func TestRunRejectsBadReleaseInterval(t *testing.T) {
	code, _, stderr := cli(t, context.Background(), nil, "run", "--data", "x", "--release-check-interval", "0s")
	if code != 2 || !strings.Contains(stderr, "--release-check-interval must be positive") {
		t.Fatalf("got %d %q", code, stderr)
	}
}
