package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

func writeTempFile(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCalamariPush(t *testing.T) {
	bundleFile := writeTempFile(t, "calamari-1.2.3.tar.gz", []byte(strings.Repeat("b", 100_000)))
	for _, tc := range []struct {
		name    string
		pushed  api.BundleView
		want    string
		console bool
	}{
		{"new and latest", api.BundleView{Version: "1.2.3", Latest: true, Created: true}, "stored Calamari 1.2.3 (latest)\n", false},
		{"new, older than the latest", api.BundleView{Version: "1.2.3", Created: true}, "stored Calamari 1.2.3 (not the latest: a newer version is stored)\n", false},
		{"already stored", api.BundleView{Version: "1.2.3", Latest: true}, "Calamari 1.2.3 was already stored\n", false},
		{"on a terminal", api.BundleView{Version: "1.2.3", Latest: true, Created: true}, "stored Calamari 1.2.3 (latest)\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.pushed = tc.pushed
			var out, errOut syncBuffer
			code := Run(context.Background(), []string{"calamari", "push", bundleFile},
				Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return f.vars()[k] }, Console: tc.console})
			if code != 0 || out.String() != tc.want {
				t.Fatalf("got %d, stdout %q, stderr %q; want 0 and %q", code, out.String(), errOut.String(), tc.want)
			}
			// The progress bar is for a person watching a terminal only.
			if bar := strings.Contains(errOut.String(), "100%"); bar != tc.console || tc.console && !strings.HasSuffix(errOut.String(), "\n") {
				t.Fatalf("stderr %q: want a finished progress bar only on a terminal", errOut.String())
			}
		})
	}

	f := newFakeAPI(t)
	f.pushed = api.BundleView{Version: "1.2.3", Latest: true, Created: true, Platforms: []string{"linux/amd64"}}
	code, stdout, _ := cli(t, context.Background(), f.vars(), "calamari", "push", bundleFile, "--json")
	var v api.BundleView
	if code != 0 || json.Unmarshal([]byte(stdout), &v) != nil || v.Version != "1.2.3" || !v.Created || v.Size != 100_000 {
		t.Fatalf("--json: got %d %q", code, stdout)
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"missing file", filepath.Join(t.TempDir(), "nope.tar.gz"), "no such file"},
		{"a folder", t.TempDir(), "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, context.Background(), f.vars(), "calamari", "push", tc.file)
			if code != 1 || !strings.HasPrefix(stderr, "tendril-server: upload") || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("got %d %q, want 1 and one line containing %q", code, stderr, tc.want)
			}
		})
	}
}

func TestCalamariList(t *testing.T) {
	f := newFakeAPI(t)
	code, stdout, _ := cli(t, context.Background(), f.vars(), "calamari", "list")
	if code != 0 || !strings.HasPrefix(stdout, "No Calamari bundles yet.") {
		t.Fatalf("empty: got %d %q", code, stdout)
	}
	at := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	f.bundles = []api.BundleView{
		{Version: "1.3.0", Latest: true, Platforms: []string{"darwin/arm64", "linux/amd64"}, Size: 12_345_678, UploadedAt: at},
		{Version: "1.2.3", Size: 900, UploadedAt: at.Add(-time.Hour)},
	}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "calamari", "list")
	want := `VERSION  LATEST  PLATFORMS                 SIZE      UPLOADED
1.3.0    yes     darwin/arm64,linux/amd64  11.8 MiB  2026-01-02T12:00:00Z
1.2.3    -       -                         900 B     2026-01-02T11:00:00Z
`
	if code != 0 || stdout != want {
		t.Fatalf("got %d:\n%s\nwant:\n%s", code, stdout, want)
	}
	code, stdout, _ = cli(t, context.Background(), f.vars(), "calamari", "list", "--json")
	var got []api.BundleView
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || len(got) != 2 || got[0].Version != "1.3.0" || !got[0].Latest {
		t.Fatalf("--json: got %d %q", code, stdout)
	}
}

func TestCalamariUpdate(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		target     api.UpdateTarget
		results    []api.UpdateResult
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"all fine", []string{"--environment", "Prod"}, api.UpdateTarget{Environment: "Prod"},
			[]api.UpdateResult{
				{Agent: "web-1", Version: "1.2.3", Result: "installed"},
				{Agent: "db-10", Version: "1.2.3", Result: "current"},
			}, 0, "web-1  installed 1.2.3\ndb-10  current\n", ""},
		{"one failed", []string{"--environment", "Prod"}, api.UpdateTarget{Environment: "Prod"},
			[]api.UpdateResult{
				{Agent: "web-1", Version: "1.2.3", Result: "installed"},
				{Agent: "web-2", Version: "1.2.3", Result: "failed", Error: "agent is not connected"},
			}, 1, "web-1  installed 1.2.3\nweb-2  failed: agent is not connected\n",
			"tendril-server: Calamari update failed on 1 of 2 agents\n"},
		{"one agent", []string{"--agent", "web-1"}, api.UpdateTarget{Agent: "web-1"},
			[]api.UpdateResult{{Agent: "web-1", Version: "1.2.3", Result: "current"}}, 0, "web-1  current\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.results = tc.results
			code, stdout, stderr := cli(t, context.Background(), f.vars(), append([]string{"calamari", "update"}, tc.args...)...)
			_, _, target := f.received()
			if code != tc.wantCode || stdout != tc.wantStdout || stderr != tc.wantStderr || target == nil || *target != tc.target {
				t.Fatalf("got %d, stdout %q, stderr %q, target %+v; want %d, %q, %q, %+v",
					code, stdout, stderr, target, tc.wantCode, tc.wantStdout, tc.wantStderr, tc.target)
			}
			code, stdout, _ = cli(t, context.Background(), f.vars(), append([]string{"calamari", "update", "--json"}, tc.args...)...)
			var got []api.UpdateResult
			if code != tc.wantCode || json.Unmarshal([]byte(stdout), &got) != nil || len(got) != len(tc.results) {
				t.Fatalf("--json: got %d %q, want %d and the results", code, stdout, tc.wantCode)
			}
		})
	}
}

func TestCalamariPushInterrupted(t *testing.T) {
	// A coordinator that never answers: Ctrl-C must end the upload.
	received := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		close(received)
		<-r.Context().Done()
	}))
	defer ts.Close()
	bundleFile := writeTempFile(t, "calamari-1.2.3.tar.gz", []byte("bundle"))
	ctx, interrupt := context.WithCancel(context.Background())
	go func() {
		<-received
		interrupt()
	}()
	code, stdout, stderr := cli(t, ctx, map[string]string{envURL: ts.URL, envAPIKey: "k"}, "calamari", "push", bundleFile)
	if code != 130 || stdout != "" || stderr != "tendril-server: interrupted\n" {
		t.Fatalf("got %d, stdout %q, stderr %q; want 130 and one line", code, stdout, stderr)
	}
}
