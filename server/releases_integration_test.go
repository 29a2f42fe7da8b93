package server

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/releases"
)

const feedWarning = "release feed check failed; will retry"

// feedJSON renders a feed document.
func feedJSON(t *testing.T, rs ...releases.Release) []byte {
	t.Helper()
	b, err := json.Marshal(releases.Feed{Releases: rs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// feedServer serves whatever body and status it is set to.
type feedServer struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	body   []byte
}

func newFeedServer(t *testing.T, status int, body []byte) *feedServer {
	t.Helper()
	f := &feedServer{status: status, body: body}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		status, body := f.status, f.body
		f.mu.Unlock()
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *feedServer) set(status int, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.body = status, body
}

// startFeedServer runs a coordinator of the given version reading feed
// every 20ms, with its logs observed.
func startFeedServer(t *testing.T, version, feed string) (*testServer, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	ts := startServer(t, func(c *Config) {
		c.Version = version
		c.ReleaseFeed = feed
		c.ReleaseCheckInterval = 20 * time.Millisecond
		c.Logger = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	})
	return ts, logs
}

// updates reads GET /api/updates.
func (ts *testServer) updates(t *testing.T) api.UpdatesView {
	t.Helper()
	resp, b := ts.api(t, http.MethodGet, "/api/updates", "", nil)
	var v api.UpdatesView
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &v) != nil {
		t.Fatalf("GET /api/updates: %d %s", resp.StatusCode, b)
	}
	return v
}

// waitAttempts waits until the feed has been read n more times.
func (ts *testServer) waitAttempts(t *testing.T, n int) {
	t.Helper()
	attempts, _ := ts.releases.Reads()
	want := attempts + n
	eventually(t, "release feed reads", func() bool {
		attempts, _ := ts.releases.Reads()
		return attempts >= want
	})
}

func warnings(logs *observer.ObservedLogs) int {
	return logs.FilterMessage(feedWarning).FilterLevelExact(zapcore.WarnLevel).Len()
}

func TestReleaseFeedFileFindsNewerBreaking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "releases.json")
	os.WriteFile(path, feedJSON(t,
		releases.Release{Version: "1.3.0", Breaking: true}, // older: its break is behind us
		releases.Release{Version: "1.4.0"},
		releases.Release{Version: "1.4.1", Breaking: true, NotesURL: "https://example.invalid/1.4.1"},
		releases.Release{Version: "1.5.0", Date: "2026-11-01", NotesURL: "https://example.invalid/1.5.0", Notes: "faster tasks"},
		releases.Release{Version: "v2.0.0"},
		releases.Release{Version: "latest"},
		releases.Release{Version: ""},
	), 0o644)
	for _, feed := range []string{path, "file://" + path} {
		t.Run(feed[:4], func(t *testing.T) {
			ts, logs := startFeedServer(t, "1.4.0", feed)
			ts.waitAttempts(t, 1)
			v := ts.updates(t)
			if v.Current != "1.4.0" || v.Latest != "1.5.0" || !v.UpdateAvailable || !v.Breaking ||
				v.NotesURL != "https://example.invalid/1.5.0" || v.Notes != "faster tasks" || v.CheckedAt == nil || v.Error != "" {
				t.Fatalf("got %+v, want 1.5.0 available, breaking through 1.4.1", v)
			}
			_, skipped := ts.releases.Reads()
			if skipped != 3 {
				t.Fatalf("skipped %d entries, want 3", skipped)
			}
			ts.waitAttempts(t, 3)
			if n := logs.FilterMessage("release feed lists invalid versions; they were skipped").Len(); n != 1 {
				t.Fatalf("%d warnings about invalid versions, want 1", n)
			}
			if n := logs.FilterMessage("a newer coordinator is available").Len(); n != 1 {
				t.Fatalf("%d notices logged, want 1", n)
			}
		})
	}
}

func TestReleaseFeedHTTPNothingNewer(t *testing.T) {
	f := newFeedServer(t, http.StatusOK, feedJSON(t,
		releases.Release{Version: "1.4.0", Breaking: true},
		releases.Release{Version: "1.4.0-rc.1"},
		releases.Release{Version: "1.3.9"},
	))
	ts, logs := startFeedServer(t, "1.4.0", f.URL+"/releases.json")
	ts.waitAttempts(t, 1)
	v := ts.updates(t)
	if v.Latest != "" || v.UpdateAvailable || v.Breaking || v.NotesURL != "" || v.CheckedAt == nil || v.Error != "" {
		t.Fatalf("got %+v, want up to date", v)
	}
	// The harness passes the deprecated health interval, which warns.
	warns := logs.FilterLevelExact(zapcore.WarnLevel).Filter(func(e observer.LoggedEntry) bool {
		return !strings.HasPrefix(e.Message, "--health-interval is deprecated")
	})
	if warns.Len() != 0 {
		t.Fatalf("unexpected warnings: %v", warns.All())
	}
}

func TestReleaseFeedWithoutFeed(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Version = "1.4.0" })
	if v := ts.updates(t); v.Current != "1.4.0" || v.UpdateAvailable || v.CheckedAt != nil || v.Error != releases.NoFeedMessage {
		t.Fatalf("got %+v, want no notice and the missing feed said", v)
	}
}

func TestReleaseFeedBadSourceRefused(t *testing.T) {
	_, err := New(t.Context(), Config{DataDir: t.TempDir(), ReleaseFeed: "ftp://example.invalid/feed.json"})
	if err == nil || !strings.Contains(err.Error(), "want an http://, https:// or file:// URL") {
		t.Fatalf("got %v, want the scheme refused", err)
	}
}

// closedPortURL is a loopback URL nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/releases.json"
}

func TestReleaseFeedFailuresWarnOnceAndKeepServing(t *testing.T) {
	oversize := append([]byte(`{"releases": [], "pad": "`), strings.Repeat("x", releases.MaxFeedSize)...)
	oversize = append(oversize, `"}`...)
	cases := []struct {
		name    string
		feed    func(t *testing.T) string
		wantErr string
	}{
		{"malformed JSON", func(t *testing.T) string {
			return newFeedServer(t, http.StatusOK, []byte(`{"releases": [{"version": `)).URL
		}, "is not valid JSON"},
		{"wrong shape", func(t *testing.T) string {
			return newFeedServer(t, http.StatusOK, []byte(`{"versions": ["1.5.0"]}`)).URL
		}, `has no "releases" list`},
		{"not found", func(t *testing.T) string {
			return newFeedServer(t, http.StatusNotFound, []byte("no such page")).URL
		}, "HTTP 404 Not Found"},
		{"unreachable", closedPortURL, "connection refused"},
		{"oversize", func(t *testing.T) string {
			return newFeedServer(t, http.StatusOK, oversize).URL
		}, "larger than 1048576 bytes"},
		{"missing file", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "none.json")
		}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, logs := startFeedServer(t, "1.4.0", tc.feed(t))
			ts.waitAttempts(t, 4)
			v := ts.updates(t)
			if v.UpdateAvailable || v.Latest != "" || v.CheckedAt != nil || !strings.Contains(v.Error, tc.wantErr) {
				t.Fatalf("got %+v, want no notice and an error with %q", v, tc.wantErr)
			}
			if n := warnings(logs); n != 1 {
				t.Fatalf("%d warnings after 4 reads, want 1", n)
			}
			// Still serving.
			if resp, b := ts.api(t, http.MethodGet, "/api/server", "", nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /api/server: %d %s", resp.StatusCode, b)
			}
		})
	}
}

func TestReleaseFeedRecoversAndKeepsLastGood(t *testing.T) {
	f := newFeedServer(t, http.StatusOK, []byte("not json"))
	ts, logs := startFeedServer(t, "1.4.0", f.URL)
	eventually(t, "the failure reported", func() bool { return ts.updates(t).Error != "" })

	// A good read replaces the error.
	f.set(http.StatusOK, feedJSON(t, releases.Release{Version: "1.5.0", NotesURL: "https://example.invalid/1.5.0"}))
	eventually(t, "the notice", func() bool { v := ts.updates(t); return v.UpdateAvailable && v.Error == "" })
	v := ts.updates(t)
	if v.Latest != "1.5.0" || v.Breaking || v.CheckedAt == nil {
		t.Fatalf("after recovery: %+v", v)
	}
	checked := *v.CheckedAt

	// A later failure keeps the last good result, and is warned about
	// once: it is a new failure, not the one already logged.
	// Good reads may go on until the switch, so the kept result is the
	// last one before it: no older than the one seen, no newer than the
	// switch.
	switched := time.Now()
	f.set(http.StatusServiceUnavailable, nil)
	eventually(t, "the new failure reported", func() bool { return strings.Contains(ts.updates(t).Error, "HTTP 503") })
	ts.waitAttempts(t, 3)
	v = ts.updates(t)
	if !v.UpdateAvailable || v.Latest != "1.5.0" || v.CheckedAt == nil || v.CheckedAt.Before(checked) || v.CheckedAt.After(switched) {
		t.Fatalf("after a later failure: %+v, want the last good result (checked between %s and %s) kept", v, checked, switched)
	}
	if n := warnings(logs); n != 2 {
		t.Fatalf("%d warnings for two distinct failures, want 2", n)
	}
}
