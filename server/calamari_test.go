package server

// Calamari bundles and tasks end to end inside one process: the real
// coordinator, real agents over loopback TLS, real signed bundles. The
// bundles here hold a small shell script as their entry point (the real
// Calamari program is exercised by the end-to-end tests that build it).

import (
	"bytes"
	"context"
	"html"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/internal/faultproxy"
	"github.com/tendrildeploy/tendril/internal/servertest"
	"github.com/tendrildeploy/tendril/server/store"
)

// packBundle builds a bundle for this platform, padded with filler so that
// transfers take more than a few writes. The filler is cheap to make and
// compresses about 130:1, so the bundle is much smaller than filler; a
// test that needs the bundle itself to be large uses packBundleWith.
func packBundle(t *testing.T, version string, filler int) []byte {
	t.Helper()
	pad := make([]byte, filler)
	for i := range pad {
		pad[i] = byte(i*7 + i/251)
	}
	return packBundleWith(t, version, pad)
}

// packBundleWith builds a bundle for this platform holding pad as a file.
func packBundleWith(t *testing.T, version string, pad []byte) []byte {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the test bundle's entry point is a shell script")
	}
	src := t.TempDir()
	plat := runtime.GOOS + "-" + runtime.GOARCH
	if err := os.MkdirAll(filepath.Join(src, plat), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, plat, "calamari"), []byte(servertest.Calamari), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "filler.bin"), pad, 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := bundle.Pack(context.Background(), &buf, "calamari", version, src,
		map[string]string{runtime.GOOS + "/" + runtime.GOARCH: plat + "/calamari"}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (ts *testServer) upload(t *testing.T, b []byte) api.BundleView {
	t.Helper()
	v, err := ts.UploadCalamari(context.Background(), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestUploadCalamari(t *testing.T) {
	ts := startServer(t, nil)
	b1 := packBundle(t, "1.0.0", 0)
	v := ts.upload(t, b1)
	if !v.Created || !v.Latest || v.Version != "1.0.0" {
		t.Fatalf("first upload: got %+v", v)
	}
	if v := ts.upload(t, b1); v.Created {
		t.Fatal("same bundle again: got created, want it recognized")
	}
	// Same version, other content: refused.
	if _, err := ts.UploadCalamari(context.Background(), bytes.NewReader(packBundle(t, "1.0.0", 10))); err == nil || !strings.Contains(err.Error(), "already stored") {
		t.Fatalf("conflicting upload: got %v", err)
	}
	ts.upload(t, packBundle(t, "1.10.0", 0))
	ts.upload(t, packBundle(t, "1.9.0", 0))
	list, err := ts.CalamariBundles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range list {
		got = append(got, b.Version)
	}
	if strings.Join(got, " ") != "1.10.0 1.9.0 1.0.0" || !list[0].Latest || list[1].Latest {
		t.Fatalf("list: got %v (latest flags %v %v), want semver order with 1.10.0 latest", got, list[0].Latest, list[1].Latest)
	}
	for _, bad := range [][]byte{nil, []byte("not a tarball"), b1[:len(b1)/2]} {
		if _, err := ts.UploadCalamari(context.Background(), bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "not a valid Calamari bundle") {
			t.Errorf("bad upload of %d bytes: got %v, want a refusal", len(bad), err)
		}
	}
	if n, _ := filepath.Glob(filepath.Join(ts.dir, "calamari", ".upload-*")); len(n) != 0 {
		t.Errorf("temporary upload files left behind: %v", n)
	}
}

func TestCalamariAutoUpdateAndRepair(t *testing.T) {
	ts := startServer(t, nil)
	a := startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	if v := ts.agentView(t, "web-1"); !v.CalamariCurrent || v.CalamariVersion != "" {
		t.Fatalf("before any upload: got current=%v version=%q, want current and none", v.CalamariCurrent, v.CalamariVersion)
	}
	ts.upload(t, packBundle(t, "2.0.0", 64<<10))
	// The next health check sees the agent lacks it and pushes it.
	ts.checkAllHealth()
	eventually(t, "Calamari 2.0.0 current on web-1", func() bool {
		v := ts.agentView(t, "web-1")
		return v.CalamariCurrent && v.CalamariVersion == "2.0.0"
	})
	marker := filepath.Join(a.home, "Calamari", "2.0.0", bundle.SuccessName)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("Success.txt: %v", err)
	}
	// Antivirus quarantines a file: the agent's verification notices it...
	if err := os.Remove(filepath.Join(a.home, "Calamari", "2.0.0", "filler.bin")); err != nil {
		t.Fatal(err)
	}
	st, err := ts.checkCalamari(context.Background(), ts.sessions.snapshot()[0], "2.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if st.Installed || !strings.Contains(st.Problem, "filler.bin") {
		t.Fatalf("check after quarantine: got %+v, want not installed naming filler.bin", st)
	}
	// ...and the next health check has the coordinator repair it.
	ts.checkAllHealth()
	eventually(t, "the damaged bundle repaired", func() bool {
		_, err := os.Stat(filepath.Join(a.home, "Calamari", "2.0.0", "filler.bin"))
		return err == nil
	})
	eventually(t, "web-1 healthy again", func() bool {
		ts.checkAllHealth()
		v := ts.agentView(t, "web-1")
		return v.Health == api.HealthHealthy && v.CalamariCurrent
	})
}

func TestCalamariPushResumesAfterCut(t *testing.T) {
	ts := startServer(t, nil)
	proxy, err := faultproxy.New(ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	startAgent(t, registerAgent(t, ts, proxy.Addr(), "far", nil), nil)
	ts.waitConnected(t, "far")
	ts.upload(t, packBundle(t, "3.0.0", 2<<20))
	// Every connection is cut after 1 MiB: a push can only finish by
	// resuming across connections.
	proxy.CutAfter(1 << 20)
	proxy.KillAll()
	eventually(t, "the bundle installed across cut connections", func() bool {
		if as := ts.sessions.snapshot(); len(as) == 1 {
			ts.checkAllHealth()
		}
		v := ts.agentView(t, "far")
		return v.CalamariVersion == "3.0.0"
	})
}

// runTaskOn creates a task and waits for it to finish.
func (ts *testServer) runTaskOn(t *testing.T, agent string, args ...string) (api.TaskView, []store.LogLine) {
	t.Helper()
	views, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: agent, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	id := views[0].ID
	var task api.TaskView
	eventually(t, "task "+id+" finished", func() bool {
		task, _ = ts.Task(context.Background(), id)
		return task.State != api.TaskQueued && task.State != api.TaskRunning
	})
	lines, err := ts.store.TaskLogs(context.Background(), id, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return task, lines
}

func logText(lines []store.LogLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Stream + ": " + l.Text + "\n")
	}
	return b.String()
}

func TestTaskPushesCalamariFirstAndRuns(t *testing.T) {
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	// The check a new session gets pushes the latest bundle when it ends
	// (automatic updates): upload only after it, so that the task is the
	// one to find Calamari missing.
	eventually(t, "web-1's first health check", func() bool { return ts.agentView(t, "web-1").LastHealthAt != "" })
	ts.upload(t, packBundle(t, "1.0.0", 0))

	task, lines := ts.runTaskOn(t, "web-1", "run-script", "--inline", "echo hello; echo oops >&2; exit 3")
	log := logText(lines)
	if task.State != api.TaskFailed || task.ExitCode != 3 {
		t.Fatalf("got %s exit %d, want failed with 3\n%s", task.State, task.ExitCode, log)
	}
	for _, want := range []string{
		"coordinator: Calamari on web-1 is out of date (", "installing 1.0.0",
		"stdout: hello", "stderr: oops", "coordinator: Task failed (exit code 3)",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// Listed current at once, not after the next health check (an hour
	// away here).
	if v := ts.agentView(t, "web-1"); !v.CalamariCurrent || v.CalamariVersion != "1.0.0" {
		t.Fatalf("after the task installed Calamari: got %q current %v, want 1.0.0 current", v.CalamariVersion, v.CalamariCurrent)
	}
	// The second task finds Calamari current and says nothing about it.
	task, lines = ts.runTaskOn(t, "web-1", "run-script", "--inline", "echo again")
	if task.State != api.TaskSucceeded || strings.Contains(logText(lines), "out of date") {
		t.Fatalf("second task: got %s\n%s", task.State, logText(lines))
	}
	for i, l := range lines {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d: want gapless order", i, l.Seq)
		}
	}
}

func TestTaskRequestsRefused(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "up", nil), nil)
	ts.waitConnected(t, "up")
	registerAgent(t, ts, ts.AgentAddr(), "down", nil) // registered, never started
	args := []string{"run-script", "--inline", "true"}
	if _, err := ts.CreateTasks(ctx, api.TaskRequest{Agent: "up", Args: args}); err == nil || !strings.Contains(err.Error(), "no Calamari bundle has been uploaded") {
		t.Fatalf("no bundle: got %v", err)
	}
	ts.upload(t, packBundle(t, "1.0.0", 0))
	tests := []struct {
		name string
		req  api.TaskRequest
		want string
	}{
		{"unknown agent", api.TaskRequest{Agent: "ghost", Args: args}, "no agent named"},
		{"disconnected agent", api.TaskRequest{Agent: "down", Args: args}, "not connected"},
		{"environment with a disconnected agent", api.TaskRequest{Environment: "Test", Args: args}, "not connected"},
		{"unknown environment", api.TaskRequest{Environment: "Nowhere", Args: args}, "has no agents"},
		{"both agent and environment", api.TaskRequest{Agent: "up", Environment: "Test", Args: args}, "exactly one"},
		{"no arguments", api.TaskRequest{Agent: "up"}, "no Calamari arguments"},
		{"unknown Calamari version", api.TaskRequest{Agent: "up", Args: args, Calamari: "9.9.9"}, "does not exist"},
		{"unknown file", api.TaskRequest{Agent: "up", Args: args, File: &api.FileRef{Name: "pkg.tar.gz", SHA256: strings.Repeat("a", 64)}}, "no uploaded file"},
		{"file name with a path", api.TaskRequest{Agent: "up", Args: args, File: &api.FileRef{Name: "../x", SHA256: strings.Repeat("a", 64)}}, "plain name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ts.CreateTasks(ctx, tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
	if ts, _ := ts.Tasks(ctx, api.TaskFilter{}); len(ts) != 0 {
		t.Fatalf("refused requests created %d tasks", len(ts))
	}
}

func TestTaskSurvivesDroppedConnection(t *testing.T) {
	ts := startServer(t, nil)
	proxy, err := faultproxy.New(ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	a := startAgent(t, registerAgent(t, ts, proxy.Addr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	gate := filepath.Join(t.TempDir(), "gate")
	script := `echo before; while [ ! -e ` + gate + ` ]; do sleep 0.05; done; echo after; exit 7`
	views, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", script}})
	if err != nil {
		t.Fatal(err)
	}
	id := views[0].ID
	eventually(t, "the first line", func() bool {
		l, _ := ts.store.TaskLogs(context.Background(), id, 1, 0)
		return strings.Contains(logText(l), "stdout: before")
	})
	// Cut the connection while the task runs and keep it down while the
	// task finishes.
	proxy.SetRefuse(true)
	proxy.KillAll()
	eventually(t, "agent disconnected", func() bool { return !a.Status().Connected })
	// Held running, and saying why and what ends it.
	const why = "agent web-1 is not connected: the task goes on there, and its log and result are collected once it connects again"
	eventually(t, "the task says why it is held up", func() bool {
		v, err := ts.Task(context.Background(), id)
		return err == nil && v.State == api.TaskRunning && strings.HasPrefix(v.StateReason, why)
	})
	c := newConsoleClient(t, ts)
	c.signIn(adminKey(t, ts))
	if _, body := c.get("/tasks/" + id); !strings.Contains(body, `<span class="detail" id="task-held">`+html.EscapeString(why)) {
		t.Errorf("the task page does not say why the task is held up:\n%s", body)
	}
	os.WriteFile(gate, nil, 0o644)
	proxy.SetRefuse(false)
	var task api.TaskView
	eventually(t, "the result collected after reconnecting", func() bool {
		task, _ = ts.Task(context.Background(), id)
		return task.State == api.TaskFailed
	})
	if task.StateReason != "" {
		t.Errorf("a final task says it is held up: %q", task.StateReason)
	}
	lines, _ := ts.store.TaskLogs(context.Background(), id, 1, 0)
	log := logText(lines)
	if task.ExitCode != 7 || strings.Count(log, "stdout: before") != 1 || strings.Count(log, "stdout: after") != 1 {
		t.Fatalf("got exit %d, want 7 and each line exactly once:\n%s", task.ExitCode, log)
	}
}

func TestTaskResumedByRestartedCoordinator(t *testing.T) {
	ts := startServer(t, nil)
	proxy, err := faultproxy.New(ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	startAgent(t, registerAgent(t, ts, proxy.Addr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	gate := filepath.Join(t.TempDir(), "gate")
	views, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: "web-1",
		Args: []string{"run-script", "--inline", `echo one; while [ ! -e ` + gate + ` ]; do sleep 0.05; done; echo two`}})
	if err != nil {
		t.Fatal(err)
	}
	id := views[0].ID
	eventually(t, "task running", func() bool {
		l, _ := ts.store.TaskLogs(context.Background(), id, 1, 0)
		return strings.Contains(logText(l), "stdout: one")
	})
	ts.stop()
	os.WriteFile(gate, nil, 0o644)
	ts2 := runServer(t, ts.dir, nil)
	proxy.SetTarget(ts2.AgentAddr())
	var task api.TaskView
	eventually(t, "the restarted coordinator collects the result", func() bool {
		task, _ = ts2.Task(context.Background(), id)
		return task.State == api.TaskSucceeded
	})
	lines, _ := ts2.store.TaskLogs(context.Background(), id, 1, 0)
	if log := logText(lines); strings.Count(log, "stdout: one") != 1 || strings.Count(log, "stdout: two") != 1 {
		t.Fatalf("want each line exactly once:\n%s", log)
	}
}

func TestCancelTask(t *testing.T) {
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "web-1", nil), nil)
	ts.waitConnected(t, "web-1")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	views, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: "web-1", Args: []string{"run-script", "--inline", "echo started; sleep 1000"}})
	if err != nil {
		t.Fatal(err)
	}
	id := views[0].ID
	eventually(t, "task running", func() bool {
		l, _ := ts.store.TaskLogs(context.Background(), id, 1, 0)
		return strings.Contains(logText(l), "stdout: started")
	})
	if _, err := ts.CancelTask(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	var task api.TaskView
	eventually(t, "task cancelled", func() bool {
		task, _ = ts.Task(context.Background(), id)
		return task.State == api.TaskCancelled
	})
	if _, err := ts.CancelTask(context.Background(), id); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("cancel a finished task: got %v", err)
	}
}

func TestDeletingAgentFailsItsTasks(t *testing.T) {
	ts := startServer(t, nil)
	startAgent(t, registerAgent(t, ts, ts.AgentAddr(), "doomed", nil), nil)
	ts.waitConnected(t, "doomed")
	ts.upload(t, packBundle(t, "1.0.0", 0))
	views, err := ts.CreateTasks(context.Background(), api.TaskRequest{Agent: "doomed", Args: []string{"run-script", "--inline", "echo started; sleep 1000"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "task running", func() bool {
		t, _ := ts.Task(context.Background(), views[0].ID)
		return t.State == api.TaskRunning
	})
	if err := ts.DeleteAgent(context.Background(), "doomed"); err != nil {
		t.Fatal(err)
	}
	task, _ := ts.Task(context.Background(), views[0].ID)
	if task.State != api.TaskFailed || task.Error != "agent deleted" {
		t.Fatalf("got %s (%s), want failed because the agent was deleted", task.State, task.Error)
	}
}

// TestPushToManyAgentsStreams pushes one 16 MiB bundle to several agents
// at once and checks what the coordinator's own code allocated meanwhile:
// had it read the bundle into memory per agent, that alone would be
// agents x 16 MiB, and even one shared copy would be 16 MiB.
//
// It does not bound what the whole process allocated. The agents run in
// this process too, and receiving and unpacking a bundle allocates
// (yamux's receive buffers, gzip, tar). Under -race, sync.Pool drops a
// quarter of what is put back, so the per-record scratch buffers of the
// coordinator's send path (frameConn's join buffers, crypto/tls's
// record buffers) are allocated again and again: about 60 MiB for this
// push with -race against 0.2 MiB without, though nothing holds more
// than one record.
func TestPushToManyAgentsStreams(t *testing.T) {
	// Record every allocation, so that the sum below is exact rather than
	// a sample. Set before the agents start, so that the window measured
	// is sampled at this rate from its first byte.
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1

	ts := startServer(t, func(c *Config) { c.PushConcurrency = 8 })
	const agents = 6
	for i := range agents {
		name := "fleet-" + string(rune('a'+i))
		startAgent(t, registerAgent(t, ts, ts.AgentAddr(), name, nil), nil)
		ts.waitConnected(t, name)
	}
	// Random filler, so that the bundle on the wire is as large as the
	// filler: gzip shrinks packBundle's patterned filler to under 1%.
	const size = 16 << 20
	pad := make([]byte, size)
	rand.NewChaCha8([32]byte{}).Read(pad)
	raw := packBundleWith(t, "4.0.0", pad)
	if len(raw) < size {
		t.Fatalf("bundle is %d bytes, want at least %d: the filler compressed", len(raw), size)
	}
	ts.upload(t, raw)
	pad, raw = nil, nil

	var before, after runtime.MemStats
	coordBefore := coordinatorAlloc()
	runtime.ReadMemStats(&before)
	res, err := ts.UpdateCalamari(context.Background(), api.UpdateTarget{Environment: "Test"})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	coord := coordinatorAlloc() - coordBefore
	for _, r := range res {
		if r.Result != "installed" {
			t.Fatalf("%s: got %s (%s), want installed", r.Agent, r.Result, r.Error)
		}
	}
	t.Logf("pushed %d MiB to %d agents; the coordinator's code allocated %.1f MiB, the whole process %.1f MiB",
		size>>20, agents, float64(coord)/(1<<20), float64(after.TotalAlloc-before.TotalAlloc)/(1<<20))
	if limit := int64(size / 2); coord > limit {
		t.Fatalf("the coordinator's code allocated %d MiB pushing %d MiB to %d agents, want under %d MiB: it holds the bundle in memory",
			coord>>20, size>>20, agents, limit>>20)
	}
}

// coordinatorAlloc is how many bytes the allocation sites whose stack
// passes through a method of Server have allocated since the process
// started, per the memory profile (exact when runtime.MemProfileRate is
// 1). That is the coordinator's own code, including what runs below it on
// its goroutines (protocol.Push, SendBulk); agents in the same process
// never run Server's methods. Not counted: yamux's send and receive
// loops, goroutines of their own that serve both sides and hold a frame
// or a stream window at a time, and allocations more than 32 calls below
// a Server method (a profile record keeps the innermost 32).
func coordinatorAlloc() int64 {
	runtime.GC() // publishes the profile up to now (see runtime.MemProfile)
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+n/4+16)
	}
	const coordinator = "github.com/tendrildeploy/tendril/server.(*Server)."
	var sum int64
	for _, r := range recs {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if strings.HasPrefix(f.Function, coordinator) {
				sum += r.AllocBytes
				break
			}
			if !more {
				break
			}
		}
	}
	return sum
}
