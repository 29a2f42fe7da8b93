//go:build linux

package server

// A coordinator whose data folder fills up: writes through the API are
// answered 507 with the room there is and the room needed, leave nothing
// behind, and work again once space is freed, with no restart; the rest
// of the API keeps answering meanwhile. The data folder is on a small
// tmpfs of its own.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/tmpfstest"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/server/datadir"
)

// dataFolderOnTmpfs makes a coordinator data folder on a tmpfs of size
// bytes of its own, and returns the mount and the folder in it. The
// tmpfs is unmounted when the test ends, after the coordinator stopped
// (cleanups run last registered first). Where mounting is not allowed
// (not Linux, not root) the test is skipped.
func dataFolderOnTmpfs(t *testing.T, size int64) (mount, dir string) {
	t.Helper()
	mount = tmpfstest.Mount(t, size)
	dir = filepath.Join(mount, "data")
	if _, err := datadir.Init(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	return mount, dir
}

// leftovers lists the files in dir that a write in progress leaves
// behind (uploads, fetches, snapshots): none may outlive a refused write.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := d.Name()
		if strings.HasPrefix(n, ".upload-") || strings.HasPrefix(n, ".fetch-") || strings.HasPrefix(n, ".snapshot-") || strings.HasPrefix(n, ".import-") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var noSpaceMessage = regexp.MustCompile(`^no space left in the data folder \(([0-9.]+) MiB free(?:, ([0-9.]+) MiB needed)?\); free space in the data folder, then send it again$`)

// noSpaceAnswer checks that an answer is a 507 whose message reads as
// noSpaceMessage, and returns the message with the MiB it says are free
// and needed (needed is -1 when not said).
func noSpaceAnswer(t *testing.T, resp *http.Response, body []byte) (msg string, free, needed float64) {
	t.Helper()
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Fatalf("got %d %s, want 507", resp.StatusCode, body)
	}
	var e api.APIError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	m := noSpaceMessage.FindStringSubmatch(e.Error)
	if m == nil {
		t.Fatalf("message %q does not match %s", e.Error, noSpaceMessage)
	}
	free, _ = strconv.ParseFloat(m[1], 64)
	needed = -1
	if m[2] != "" {
		needed, _ = strconv.ParseFloat(m[2], 64)
	}
	return e.Error, free, needed
}

// wantNoSpace checks a 507 answer: its message, the room it says is
// free (less than the write needed), and the room it says was needed
// (needed bytes, or not said when needed is 0).
func wantNoSpace(t *testing.T, resp *http.Response, body []byte, needed int64) {
	t.Helper()
	msg, free, got := noSpaceAnswer(t, resp, body)
	if needed == 0 {
		if got >= 0 {
			t.Fatalf("message %q names a size the request did not give", msg)
		}
		return
	}
	if want := float64(needed) / (1 << 20); got < want-0.5 || got > want+0.5 {
		t.Fatalf("message %q: got %.1f MiB needed, want about %.1f", msg, got, want)
	}
	if free >= got {
		t.Fatalf("message %q: says more is free than was needed", msg)
	}
}

// postUpload posts body to path with the admin key, as api/client does: on
// a connection kept alive, which is what lets net/http's server deliver
// an answer given before the whole body was read (it stops reading,
// answers, and closes only once the client has had time to read it; a
// client that asked to close is cut off at once).
func (ts *testServer) postUpload(t *testing.T, path string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+ts.HTTPAddr()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminKey(t, ts))
	req.Header.Set("Content-Type", "application/octet-stream")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// chunked hides a body's length, so that it is sent chunked and the
// coordinator only learns it is too big by running out of room.
type chunked struct{ r io.Reader }

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestUploadDiskFull fills the data folder's file system and sends each
// kind of upload through the API, with its length and chunked: 507 with
// the room free and needed, nothing left behind, the rest of the API
// answering; a small upload still fits; once space is freed the big one
// is stored, with no restart.
func TestUploadDiskFull(t *testing.T) {
	_, dir := dataFolderOnTmpfs(t, 40<<20)
	ts := runServer(t, dir, nil)
	enrolled(t, ts, "web-1")

	big, err := os.ReadFile(servertest.CalamariBundle(t, "2.0.0", 12<<20))
	if err != nil {
		t.Fatal(err)
	}
	small, err := os.ReadFile(servertest.CalamariBundle(t, "1.0.0", 0))
	if err != nil {
		t.Fatal(err)
	}
	agentBinary := servertest.AgentBinary(t, "9.9.9", "linux", "amd64")
	junk := bytes.Repeat([]byte("x"), 12<<20)

	free := tmpfstest.FillLeaving(t, dir, 6<<20)
	uploads := []struct {
		name, path string
		body       []byte
		// streams: the write is reached without a length, so running out
		// of room is met while writing (an import is parsed first).
		streams bool
	}{
		{"calamari", "/api/calamari", big, true},
		{"file", "/api/files", junk, true},
		{"agent package", "/api/agent-packages?version=9.9.9&os=linux&arch=amd64", append(slices.Clone(agentBinary), junk...), true},
		{"import", "/api/import?trust_any_source=true", junk, false},
	}
	for _, u := range uploads {
		t.Run(u.name+" with its length", func(t *testing.T) {
			resp, body := ts.postUpload(t, u.path, bytes.NewReader(u.body))
			wantNoSpace(t, resp, body, int64(len(u.body)))
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("left behind: %v", l)
			}
		})
		if !u.streams {
			continue
		}
		t.Run(u.name+" chunked", func(t *testing.T) {
			resp, body := ts.postUpload(t, u.path, chunked{bytes.NewReader(u.body)})
			wantNoSpace(t, resp, body, 0)
			if l := leftovers(t, dir); len(l) > 0 {
				t.Fatalf("left behind: %v", l)
			}
		})
	}

	// Meanwhile the rest answers: the agents, the coordinator's health.
	if resp, body := ts.api(t, "GET", "/api/agents", "", nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"web-1"`) {
		t.Fatalf("agents list while the folder is full: %d %s", resp.StatusCode, body)
	}
	if resp, body := ts.api(t, "GET", "/healthz", "-", nil); resp.StatusCode != 200 {
		t.Fatalf("healthz while the folder is full: %d %s", resp.StatusCode, body)
	}
	if resp, body := ts.postUpload(t, "/api/calamari", bytes.NewReader(small)); resp.StatusCode != 201 {
		t.Fatalf("small upload beside a full folder: got %d %s, want 201", resp.StatusCode, body)
	}

	free()
	if resp, body := ts.postUpload(t, "/api/calamari", bytes.NewReader(big)); resp.StatusCode != 201 {
		t.Fatalf("big upload once space is freed: got %d %s, want 201", resp.StatusCode, body)
	}
	if resp, body := ts.postUpload(t, "/api/files", chunked{bytes.NewReader(junk)}); resp.StatusCode != 201 {
		t.Fatalf("chunked file once space is freed: got %d %s, want 201", resp.StatusCode, body)
	}
}

// TestBackupSnapshotDiskFull takes a backup snapshot on a data folder
// with no room left: 507 naming the snapshot's size, no partial snapshot,
// the API answering meanwhile, a database write answered 507 too; once
// space is freed both work.
func TestBackupSnapshotDiskFull(t *testing.T) {
	_, dir := dataFolderOnTmpfs(t, 24<<20)
	ts := runServer(t, dir, nil)
	enrolled(t, ts, "web-1")

	free := tmpfstest.Fill(t, dir)
	resp, body := ts.api(t, "POST", "/api/backup/snapshot", "", nil)
	fi, err := os.Stat(filepath.Join(dir, datadir.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	wantNoSpaceAtLeast(t, resp, body, fi.Size())
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	if resp, body := ts.api(t, "GET", "/api/agents", "", nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"web-1"`) {
		t.Fatalf("agents list while the folder is full: %d %s", resp.StatusCode, body)
	}
	// A request whose record the database has no room for is a full
	// folder too, not a fault.
	for _, r := range []struct{ method, path, body string }{
		{"PUT", "/api/maintenance", `{"on": true}`},
		{"POST", "/api/tokens", `{"environment": "Test"}`},
	} {
		resp, body = ts.api(t, r.method, r.path, "", strings.NewReader(r.body))
		wantNoSpace(t, resp, body, 0)
	}

	free()
	if resp, body := ts.api(t, "POST", "/api/backup/snapshot", "", nil); resp.StatusCode != 201 {
		t.Fatalf("snapshot once space is freed: got %d %s, want 201", resp.StatusCode, body)
	}
	if resp, body := ts.api(t, "PUT", "/api/maintenance", "", strings.NewReader(`{"on": true}`)); resp.StatusCode != 200 {
		t.Fatalf("maintenance on once space is freed: got %d %s, want 200", resp.StatusCode, body)
	}
}

// wantNoSpaceAtLeast is wantNoSpace for an estimate: the room said to be
// needed is at least min bytes.
func wantNoSpaceAtLeast(t *testing.T, resp *http.Response, body []byte, min int64) {
	t.Helper()
	msg, _, got := noSpaceAnswer(t, resp, body)
	if got < 0 {
		t.Fatalf("message %q says no size needed, want at least %d bytes", msg, min)
	}
	if got < float64(min)/(1<<20)-0.05 {
		t.Fatalf("message %q: got %.1f MiB needed, want at least the database's %.1f", msg, got, float64(min)/(1<<20))
	}
}
