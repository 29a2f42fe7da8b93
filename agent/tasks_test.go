package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/protocol"
)

func TestTaskRequestsRefused(t *testing.T) {
	c := newTestCoordinator(t)
	a := startAgent(t, registered(t, c), nil)
	a.waitConnected(t, 1)
	s := c.live()
	tests := []struct {
		name     string
		typ      string
		req      any
		respType string
		want     string
	}{
		{"start with an unknown Calamari", protocol.TypeTaskStart, protocol.TaskStart{Ticket: "t1", Calamari: "9.9.9"}, protocol.TypeTaskStarted, "Calamari 9.9.9 is not installed or damaged"},
		{"start with a path as ticket", protocol.TypeTaskStart, protocol.TaskStart{Ticket: "../t1", Calamari: "1.0.0"}, protocol.TypeTaskStarted, "invalid ticket"},
		{"start with a hidden ticket", protocol.TypeTaskStart, protocol.TaskStart{Ticket: ".t1", Calamari: "1.0.0"}, protocol.TypeTaskStarted, "invalid ticket"},
		{"start with a device name as ticket", protocol.TypeTaskStart, protocol.TaskStart{Ticket: "con", Calamari: "1.0.0"}, protocol.TypeTaskStarted, "invalid ticket"},
		{"start with an overlong ticket", protocol.TypeTaskStart, protocol.TaskStart{Ticket: strings.Repeat("a", 129), Calamari: "1.0.0"}, protocol.TypeTaskStarted, "invalid ticket"},
		{"follow an unknown ticket", protocol.TypeTaskFollow, protocol.TaskFollow{Ticket: "nope"}, protocol.TypeTaskEnd, "unknown ticket"},
		{"cancel an unknown ticket", protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: "nope"}, protocol.TypeAck, "unknown ticket"},
		{"cancel a path", protocol.TypeTaskCancel, protocol.TaskCancel{Ticket: "a/b"}, protocol.TypeAck, "invalid ticket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.call(s, tt.typ, tt.req, tt.respType, nil)
			if !protocol.IsCode(err, protocol.CodeBadRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %s mentioning %q", err, protocol.CodeBadRequest, tt.want)
			}
		})
	}
	// Nothing was left behind by the refused starts.
	entries, err := os.ReadDir(filepath.Join(a.cfg.Home, workDir))
	if err != nil || len(entries) != 0 {
		t.Errorf("work folder after refused starts: %v, %v; want empty", entries, err)
	}
}

func TestTaskInterruptedByRestartIsFailed(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	// What an agent killed while its task ran leaves: task.json, a log
	// whose last line was cut mid-write, no result.
	dir := filepath.Join(home, workDir, "interrupted")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"task.json": `{"ticket": "interrupted", "calamari": "1.0.0", "args": ["x"], "started_at": "2024-01-01T00:00:00Z", "pid": 999999}`,
		"log.jsonl": `{"seq":1,"time":"2024-01-01T00:00:00Z","stream":"agent","text":"running calamari 1.0.0 x"}` + "\n" +
			`{"seq":2,"time":"2024-01-01T00:00:01Z","stream":"stdout","text":"working"}` + "\n" +
			`{"seq":3,"time":"2024-01-01T00:00:02Z","stre`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1) // Run recovers before it connects
	if !exists(filepath.Join(dir, "result.json")) {
		t.Fatal("no result.json once the agent started")
	}
	s := c.live()
	f, err := c.follow(s, "interrupted", 1)
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, f.entries, 1)
	const why = "the agent stopped while the task ran"
	if len(f.entries) != 3 || f.entries[1].Text != "working" || f.entries[2].Stream != "agent" || f.entries[2].Text != why {
		t.Errorf("log: got %+v, want the two entries that were whole and the agent's note", f.entries)
	}
	if f.end.State != protocol.TaskFailed || f.end.Error != why || f.end.LastSeq != 3 {
		t.Errorf("end: got %+v, want failed: %s, last seq 3", f.end, why)
	}
	var st protocol.TaskStarted
	if err := c.call(s, protocol.TypeTaskStart, protocol.TaskStart{Ticket: "interrupted", Calamari: "1.0.0"}, protocol.TypeTaskStarted, &st); err != nil {
		t.Fatal(err)
	}
	if !st.Existing || st.State != protocol.TaskFailed {
		t.Errorf("start of the interrupted ticket: got %+v, want the existing failed task", st)
	}
}

// checkSeqs checks that entries are numbered first, first+1, ... without
// gaps.
func checkSeqs(t *testing.T, entries []protocol.LogEntry, first int64) {
	t.Helper()
	for i, e := range entries {
		if want := first + int64(i); e.Seq != want {
			t.Fatalf("entry %d: got seq %d, want %d", i, e.Seq, want)
		}
	}
}

func TestTaskStartReportsMissingCalamari(t *testing.T) {
	c := newTestCoordinator(t)
	a := startAgent(t, registered(t, c), nil)
	a.waitConnected(t, 1)
	s := c.live()
	// Asked to, the agent tells a missing version apart from any other
	// refusal, so that the coordinator pushes it rather than fail the
	// task; asked nothing, it answers as agents before it did.
	tests := []struct {
		name   string
		report bool
		code   string
	}{
		{"asked to report it", true, protocol.CodeCalamariMissing},
		{"not asked", false, protocol.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := protocol.TaskStart{Ticket: "t1", Calamari: "9.9.9", Args: []string{"x"}, ReportMissingCalamari: tt.report}
			err := c.call(s, protocol.TypeTaskStart, req, protocol.TypeTaskStarted, nil)
			if !protocol.IsCode(err, tt.code) || !strings.Contains(err.Error(), "Calamari 9.9.9 is not installed or damaged") {
				t.Errorf("got %v, want %s saying Calamari 9.9.9 is not installed", err, tt.code)
			}
		})
	}
	// Nothing of the task was kept: the coordinator starts it again.
	entries, err := os.ReadDir(filepath.Join(a.cfg.Home, workDir))
	if err != nil || len(entries) != 0 {
		t.Errorf("work folder after refused starts: %v, %v; want empty", entries, err)
	}
}
