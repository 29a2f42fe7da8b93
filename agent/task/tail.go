package task

import (
	"errors"
	"fmt"
	"time"

	"github.com/tendrildeploy/tendril/protocol"
)

// Output the log cannot take. When a write to a task's log fails (a full
// disk, most often), the task's output is not dropped as it comes: its
// newest lines wait in memory, in the task's tail, and the log is tried
// again every tailRetry. Once it takes entries again it gets, in order, a
// line saying how many lines were pushed out of the tail meanwhile and
// why, then the tail. A task that finishes with its log still refusing
// keeps the tail in memory for good (mem), numbered after the log, and
// the Runner serves it to followers from there until it can be written
// (Runner.kept). So the end of a script's output, which usually says how
// it went, is never the part lost, and a loss is always counted, said in
// the log, and reported in TaskEnd.

// Bounds of a task's tail: the newest lines that fit both.
const (
	tailLines = 1000
	tailBytes = 1 << 20
	// tailRetry is how long after a failed write the log is tried again.
	tailRetry = time.Second
	// tailLineOverhead is what a line costs beyond its text, for
	// tailBytes: the entry's other fields and its encoding.
	tailLineOverhead = 64
)

// errNoLog is the write failure of a task whose log could not be opened.
var errNoLog = errors.New("the task's log could not be opened")

// tailLine is one line of output waiting for the log.
type tailLine struct {
	at           time.Time
	stream, text string
}

// tail is the output of a task its log has not taken yet. Guarded by the
// task's mu.
type tail struct {
	lines []tailLine // oldest first
	bytes int
	// lost counts the lines pushed out of the tail for good; unsaid is
	// how many of them the log does not say yet.
	lost, unsaid int64
	// reason is the first write failure.
	reason  error
	retryAt time.Time
}

// empty reports whether the log holds everything so far.
func (tl *tail) empty() bool { return len(tl.lines) == 0 && tl.unsaid == 0 }

// failed records a write failure and when to try again.
func (tl *tail) failed(err error) {
	if tl.reason == nil {
		tl.reason = err
	}
	tl.retryAt = time.Now().Add(tailRetry)
}

// due reports whether it is time to try the log again.
func (tl *tail) due() bool { return !time.Now().Before(tl.retryAt) }

// push adds a line, pushing the oldest out while the tail is over its
// bounds. The newest line always stays.
func (tl *tail) push(l tailLine) {
	tl.lines = append(tl.lines, l)
	tl.bytes += len(l.text) + tailLineOverhead
	drop := 0
	for len(tl.lines)-drop > 1 && (len(tl.lines)-drop > tailLines || tl.bytes > tailBytes) {
		tl.bytes -= len(tl.lines[drop].text) + tailLineOverhead
		drop++
	}
	if drop > 0 {
		tl.lost += int64(drop)
		tl.unsaid += int64(drop)
		tl.lines = append(tl.lines[:0], tl.lines[drop:]...)
	}
}

// lostLine is the log line that says n lines were lost, and why.
func (tl *tail) lostLine(n int64) tailLine {
	return tailLine{at: time.Now().UTC(), stream: streamAgent,
		text: fmt.Sprintf("%d lines of output were lost here: the agent could not write them to its disk (%v)", n, tl.reason)}
}

// lostReason is why lines were lost, "" if none were.
func (tl *tail) lostReason() string {
	if tl.lost == 0 {
		return ""
	}
	return fmt.Sprintf("the agent could not write them to its disk: %v", tl.reason)
}

// flushLocked moves what it can of the tail to the log, in order, and
// reports whether all of it went.
func (t *task) flushLocked() bool {
	tl := &t.tail
	if tl.unsaid > 0 {
		if err := t.writeLocked(tl.lostLine(tl.unsaid)); err != nil {
			tl.failed(err)
			return false
		}
		tl.unsaid = 0
	}
	for len(tl.lines) > 0 {
		l := tl.lines[0]
		if err := t.writeLocked(l); err != nil {
			tl.failed(err)
			return false
		}
		tl.bytes -= len(l.text) + tailLineOverhead
		tl.lines = tl.lines[1:]
	}
	tl.lines, tl.bytes = nil, 0
	return true
}

// keepLocked numbers what is left of the tail after the log and keeps it
// in mem: the task is over, and its output must reach the coordinator
// whether or not the disk ever takes it.
func (t *task) keepLocked() {
	tl := &t.tail
	mem := append([]protocol.LogEntry(nil), t.mem...)
	add := func(l tailLine) {
		t.lastSeq++
		mem = append(mem, protocol.LogEntry{Seq: t.lastSeq, Time: l.at, Stream: l.stream, Text: l.text})
	}
	if tl.unsaid > 0 {
		add(tl.lostLine(tl.unsaid))
		tl.unsaid = 0
	}
	for _, l := range tl.lines {
		add(l)
	}
	tl.lines, tl.bytes = nil, 0
	t.mem = mem
	t.notifyLocked()
}

// persistLocked writes what a finished task keeps in memory (mem, its
// result) to disk, and reports whether all of it is there now.
func (t *task) persistLocked() bool {
	if t.log == nil {
		// It could not be opened when the task started.
		f, size, last, err := openLog(t.dir)
		if err != nil {
			return false
		}
		if last != t.diskSeq {
			f.Close() // not the log this task numbered its entries after
			return false
		}
		t.log, t.logSize = f, size
	}
	for len(t.mem) > 0 {
		if err := t.writeEntryLocked(t.mem[0]); err != nil {
			return false
		}
		t.mem = t.mem[1:]
	}
	t.mem = nil
	if !t.resultWritten && t.result != nil {
		if err := t.writeResult(*t.result); err != nil {
			return false
		}
		t.resultWritten = true
	}
	return t.resultWritten
}
