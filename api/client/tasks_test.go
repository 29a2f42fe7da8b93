package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
)

func TestUploadFile(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"small", []byte("package contents\n")},
		{"empty", nil},
		{"larger than one write", bytes.Repeat([]byte("0123456789abcdef"), 64<<10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := sha256.Sum256(tc.body)
			want := hex.EncodeToString(sum[:])
			v, err := c.UploadFile(ctx, bytes.NewReader(tc.body), int64(len(tc.body)))
			if err != nil {
				t.Fatal(err)
			}
			if v.SHA256 != want || v.Size != int64(len(tc.body)) {
				t.Fatalf("got %+v, want sha256 %s size %d", v, want, len(tc.body))
			}
			stored, err := os.ReadFile(filepath.Join(co.dir, "files", want))
			if err != nil || !bytes.Equal(stored, tc.body) {
				t.Fatalf("stored file: got %d bytes, %v; want the %d bytes sent", len(stored), err, len(tc.body))
			}
		})
	}
}

// TestUploadStreams checks what goes on the wire, against a handler that
// stands in for the coordinator: a Content-Length, not a chunked body.
func TestUploadStreams(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 1<<20)
	sum := sha256.Sum256(body)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.ContentLength != int64(len(body)) || len(r.TransferEncoding) != 0 || n != int64(len(body)) {
			http.Error(w, fmt.Sprintf(`{"error": "content length %d, transfer encoding %v, %d bytes"}`, r.ContentLength, r.TransferEncoding, n), http.StatusBadRequest)
			return
		}
		sha := hex.EncodeToString(sum[:])
		if r.URL.Path == "/api/files" {
			// A coordinator that stored something else must be caught.
			sha = strings.Repeat("0", 64)
		}
		fmt.Fprintf(w, `{"sha256": %q, "size": %d}`, sha, n)
	}))
	defer ts.Close()
	c := newClient(t, ts.URL, "k")
	// io.MultiReader hides the length from net/http, as a file would.
	if _, err := c.UploadCalamari(context.Background(), io.MultiReader(bytes.NewReader(body)), int64(len(body))); err != nil {
		t.Fatalf("calamari upload: %v", err)
	}
	_, err := c.UploadFile(context.Background(), io.MultiReader(bytes.NewReader(body)), int64(len(body)))
	if err == nil || !strings.Contains(err.Error(), "were sent") {
		t.Fatalf("file upload with a wrong answer: got %v, want a SHA-256 mismatch", err)
	}
}

func TestTaskErrors(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)
	tok, err := c.CreateToken(ctx, api.TokenRequest{Environment: "Test", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	// "gone" is registered but disconnected; "web01" stays connected.
	gone := enrollAgent(t, tok, "gone")
	waitForAgent(t, c, "gone", func(a api.AgentView) bool { return a.Connected })
	gone.sess.Close()
	waitForAgent(t, c, "gone", func(a api.AgentView) bool { return !a.Connected })
	tok, err = c.CreateToken(ctx, api.TokenRequest{Environment: "Prod", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	enrollAgent(t, tok, "web01")
	waitForAgent(t, c, "web01", func(a api.AgentView) bool { return a.Connected })

	args := []string{"run-script", "--inline", "echo hi"}
	t.Run("no bundle uploaded", func(t *testing.T) {
		_, err := c.CreateTasks(ctx, api.TaskRequest{Agent: "web01", Args: args})
		if !IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "no Calamari bundle has been uploaded") {
			t.Fatalf("got %v, want 400", err)
		}
	})
	b := packBundle(t, "1.0.0", "x")
	if _, err := c.UploadCalamari(ctx, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		req    api.TaskRequest
		status int
		want   string
	}{
		{"no args", api.TaskRequest{Agent: "web01"}, http.StatusBadRequest, `field "args" must be an array, not null`},
		{"empty args", api.TaskRequest{Agent: "web01", Args: []string{}}, http.StatusBadRequest, "no Calamari arguments"},
		{"unknown agent", api.TaskRequest{Agent: "nobody", Args: args}, http.StatusNotFound, `no agent named "nobody"`},
		{"unknown environment", api.TaskRequest{Environment: "Nowhere", Args: args}, http.StatusNotFound, "has no agents"},
		{"agent and environment", api.TaskRequest{Agent: "web01", Environment: "Prod", Args: args}, http.StatusBadRequest, "exactly one"},
		{"disconnected agent", api.TaskRequest{Agent: "gone", Args: args}, http.StatusConflict, "not connected"},
		{"environment with a disconnected agent", api.TaskRequest{Environment: "Test", Args: args}, http.StatusConflict, "nothing was started"},
		{"unknown Calamari version", api.TaskRequest{Agent: "web01", Args: args, Calamari: "9.9.9"}, http.StatusNotFound, "Calamari version 9.9.9 does not exist"},
		{"unknown file", api.TaskRequest{Agent: "web01", Args: args, File: &api.FileRef{Name: "pkg.tar.gz", SHA256: strings.Repeat("a", 64)}},
			http.StatusNotFound, "no uploaded file"},
		{"bad file name", api.TaskRequest{Agent: "web01", Args: args, File: &api.FileRef{Name: "../x", SHA256: strings.Repeat("a", 64)}},
			http.StatusBadRequest, "file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateTasks(ctx, tc.req)
			if !IsStatus(err, tc.status) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "create task: ") {
				t.Fatalf("got %v, want HTTP %d containing %q", err, tc.status, tc.want)
			}
		})
	}
	if ts, err := c.Tasks(ctx, "", 0); err != nil || len(ts) != 0 {
		t.Fatalf("tasks after refused requests: got %+v, %v; want none", ts, err)
	}

	const unknown = "00000000-0000-0000-0000-000000000000"
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
	}{
		{"get unknown task", func() error { _, err := c.Task(ctx, unknown); return err }, http.StatusNotFound},
		{"cancel unknown task", func() error { _, err := c.CancelTask(ctx, unknown); return err }, http.StatusNotFound},
		{"follow unknown task", func() error {
			_, _, err := c.FollowTaskLog(ctx, unknown, 1, true, func(api.LogLineView) error { return nil })
			return err
		}, http.StatusNotFound},
		{"list tasks of unknown agent", func() error { _, err := c.Tasks(ctx, "nobody", 0); return err }, http.StatusNotFound},
		{"list with a bad limit", func() error { _, err := c.Tasks(ctx, "", 5000); return err }, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !IsStatus(err, tc.status) {
				t.Fatalf("got %v, want HTTP %d", err, tc.status)
			}
		})
	}
	if _, err := c.Task(ctx, ""); err == nil {
		t.Fatal("empty task ID accepted")
	}
}

// TestTaskLifecycle runs a task on the fake agent: created, its log
// followed live to the end, read again, listed, and not cancellable once
// finished.
func TestTaskLifecycle(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)
	b := packBundle(t, "1.0.0", "x")
	if _, err := c.UploadCalamari(ctx, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	tok, err := c.CreateToken(ctx, api.TokenRequest{Environment: "Test", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	fa := enrollAgent(t, tok, "web01")
	waitForAgent(t, c, "web01", func(a api.AgentView) bool { return a.Connected })

	args := []string{"run-script", "--inline", "echo hello"}
	created, err := c.CreateTasks(ctx, api.TaskRequest{Environment: "Test", Args: args})
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 1 || created[0].Agent != "web01" || created[0].Calamari != "1.0.0" || !slices.Equal(created[0].Args, args) {
		t.Fatalf("created: got %+v, want one task on web01 with Calamari 1.0.0", created)
	}
	id := created[0].ID

	// Follow live: the agent's first line arrives before the task ends.
	var lines []api.LogLineView
	type result struct {
		end   api.TaskView
		ended bool
		err   error
	}
	done := make(chan result, 1)
	firstLine := make(chan struct{})
	go func() {
		end, ended, err := c.FollowTaskLog(ctx, id, 1, true, func(l api.LogLineView) error {
			lines = append(lines, l)
			if l.Text == "hello from "+id {
				close(firstLine)
			}
			return nil
		})
		done <- result{end, ended, err}
	}()
	select {
	case <-firstLine:
	case r := <-done:
		t.Fatalf("follow ended before the task did: %+v", r)
	case <-ctx.Done():
		t.Fatal("the agent's first line never arrived")
	}
	if v, err := c.Task(ctx, id); err != nil || v.State != "running" || v.StartedAt == nil {
		t.Fatalf("task while running: got %+v, %v; want running", v, err)
	}
	close(fa.release)
	r := <-done
	if r.err != nil || !r.ended || r.end.State != "succeeded" || r.end.ExitCode != 0 || r.end.FinishedAt == nil {
		t.Fatalf("follow: got %+v, want ended with the task succeeded", r)
	}
	var texts []string
	for i, l := range lines {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d, want %d", i, l.Seq, i+1)
		}
		texts = append(texts, l.Text)
	}
	// The fake agent says no FeatureIsolation in its Hello, like an agent
	// older than isolation: the coordinator runs the task and says so.
	wantTexts := []string{"Started on web01: calamari 1.0.0",
		"The agent on web01 is too old to isolate tasks: this one runs at once, whatever else runs there (isolation and locks need a newer agent)",
		"hello from " + id, "bye", "Task succeeded (exit code 0)"}
	if !slices.Equal(texts, wantTexts) {
		t.Fatalf("log: got %q, want %q", texts, wantTexts)
	}

	for _, tc := range []struct {
		name      string
		from      int64
		follow    bool
		wantLines int
	}{
		{"whole log", 1, false, 5},
		{"from 0 means from the start", 0, false, 5},
		{"resume", 3, false, 3},
		{"past the end", 6, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n int
			end, ended, err := c.FollowTaskLog(ctx, id, tc.from, tc.follow, func(api.LogLineView) error { n++; return nil })
			if err != nil || !ended || end.ID != id || n != tc.wantLines {
				t.Fatalf("got %d lines, ended %v, %v; want %d lines and the end", n, ended, err, tc.wantLines)
			}
		})
	}

	stop := errors.New("stop")
	if _, ended, err := c.FollowTaskLog(ctx, id, 1, false, func(api.LogLineView) error { return stop }); err != stop || ended {
		t.Fatalf("callback error: got ended %v, %v; want the callback's error", ended, err)
	}

	for _, agent := range []string{"", "web01"} {
		ts, err := c.Tasks(ctx, agent, 10)
		if err != nil || len(ts) != 1 || ts[0].ID != id || ts[0].LogLines != 5 {
			t.Fatalf("tasks of %q: got %+v, %v; want the one task", agent, ts, err)
		}
	}
	if _, err := c.CancelTask(ctx, id); !IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "already succeeded") {
		t.Fatalf("cancel finished task: got %v, want 409", err)
	}
}

// TestFollowTaskLogStops uses handlers that stand in for the coordinator
// to break the stream in ways a real one cannot be made to on demand.
func TestFollowTaskLogStops(t *testing.T) {
	line := `{"seq": 7, "time": "2026-01-02T12:00:00Z", "stream": "stdout", "text": "seven"}` + "\n"
	for _, tc := range []struct {
		name      string
		handler   func(w http.ResponseWriter, r *http.Request)
		follow    bool
		wantEnded bool
		wantErr   string
		wantSeqs  []int64
	}{
		{"keep-alives are skipped", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "\n\n"+line+"\n"+`{"end": {"id": "t", "state": "failed", "exit_code": 3}}`+"\n")
		}, true, true, "", []int64{7}},
		{"not following, still running", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, line)
		}, false, false, "", []int64{7}},
		{"connection cut", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, line)
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}, true, false, "", []int64{7}},
		{"silent stream", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, line)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, true, false, "", []int64{7}},
		{"garbage", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<html>\n")
		}, true, false, "decode line after 2", nil},
		{"query", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.EscapedPath() != "/api/tasks/a%2Fb/log" || r.URL.Query().Get("from") != "3" || r.URL.Query().Get("follow") != "true" {
				http.Error(w, `{"error": "unexpected request `+r.URL.String()+`"}`, http.StatusBadRequest)
				return
			}
			io.WriteString(w, `{"end": {"id": "t"}}`+"\n")
		}, true, true, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(tc.handler))
			defer ts.Close()
			c := newClient(t, ts.URL, "k")
			c.followIdle = 200 * time.Millisecond
			id := "t"
			if tc.name == "query" {
				id = "a/b"
			}
			var seqs []int64
			_, ended, err := c.FollowTaskLog(testContext(t), id, 3, tc.follow, func(l api.LogLineView) error {
				seqs = append(seqs, l.Seq)
				return nil
			})
			if ended != tc.wantEnded || !slices.Equal(seqs, tc.wantSeqs) {
				t.Fatalf("got ended %v, seqs %v, %v; want ended %v, seqs %v", ended, seqs, err, tc.wantEnded, tc.wantSeqs)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestFollowTaskLogContext(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer ts.Close()
	c := newClient(t, ts.URL, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, ended, err := c.FollowTaskLog(ctx, "t", 1, true, func(api.LogLineView) error { return nil })
	if ended || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got ended %v, %v; want the context's error", ended, err)
	}
}
