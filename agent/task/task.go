package task

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/servicemsg"
)

// Log streams.
const (
	streamStdout = "stdout"
	streamStderr = "stderr"
	streamAgent  = "agent"
)

// maxLine is the longest log entry text: a longer line of output is split
// into several entries, so any entry fits a frame with room to spare even
// when JSON escaping makes it six times longer.
const maxLine = 64 << 10

// task is one task started by this agent process, from its start until
// its result is written.
type task struct {
	ticket   string
	dir      string
	calamari string
	// done is closed once the result is written.
	done chan struct{}
	// stdout and stderr are touched only by exec's copying goroutines and,
	// after Wait, by the waiter.
	stdout, stderr *lineWriter

	mu      sync.Mutex
	log     *os.File
	logSize int64 // bytes of complete lines in log
	// lastSeq is the seq of the newest entry: entries up to diskSeq are
	// in the log file, the ones after it in mem.
	lastSeq int64
	diskSeq int64
	// mem holds the entries after diskSeq, in order: the end of the
	// output of a task that finished while its log could not be written
	// (tail.go). Replaced, never changed in place, so a follower may read
	// a slice it took under mu.
	mem []protocol.LogEntry
	// changed is closed, and replaced, whenever lastSeq or result changes:
	// followers wait on it instead of polling.
	changed chan struct{}
	result  *result
	// resultWritten is set once result.json holds result.
	resultWritten bool
	// cancelled is set by the first cancellation.
	cancelled bool
	// claim is what the task holds while it runs (its isolation and
	// locks); waiting is set while it waits for it, and stopWait gives
	// the wait up.
	claim    *claim
	waiting  bool
	stopWait context.CancelFunc
	// proc is the process once started; exited is set once it can no
	// longer be signalled safely (see Runner.wait).
	proc   *os.Process
	exited bool
	// tail is the output the log could not take yet (tail.go).
	tail tail
	// mask hides the task's sensitive values in its log; nil if it has
	// none. env is its variables as NAME=VALUE, kept in memory only.
	// Both are set before the task is shared and never changed.
	mask *masker
	env  []string
	// outputs and artifacts are what the script's service messages set;
	// written into the result when the task finishes.
	outputs   map[string]string
	artifacts []protocol.Artifact
}

func newTask(ticket, dir, calamari string) *task {
	return &task{ticket: ticket, dir: dir, calamari: calamari, done: make(chan struct{}), changed: make(chan struct{})}
}

// openTask is a task read back from disk to be finished (recovery).
func openTask(ticket, dir, calamari string) (*task, error) {
	t := newTask(ticket, dir, calamari)
	if err := t.openLog(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *task) openLog() error {
	f, size, last, err := openLog(t.dir)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.log, t.logSize, t.lastSeq, t.diskSeq = f, size, last, last
	t.mu.Unlock()
	return nil
}

func (t *task) closeLog() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.log != nil {
		t.log.Close()
		t.log = nil
	}
}

func (t *task) writeResult(res result) error {
	return writeJSON(filepath.Join(t.dir, resultFile), res)
}

// state is the task's state as Start reports it.
func (t *task) state() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.result != nil {
		return t.result.State
	}
	if t.waiting {
		return protocol.TaskQueued
	}
	return protocol.TaskRunning
}

// snapshot returns what a follower needs to decide whether to read, end or
// wait, and the channel that tells it something changed since: the newest
// seq, the newest on disk, the entries after it kept in memory.
func (t *task) snapshot() (lastSeq, diskSeq int64, mem []protocol.LogEntry, res *result, changed <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastSeq, t.diskSeq, t.mem, t.result, t.changed
}

func (t *task) notifyLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *task) append(stream, text string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.appendLocked(stream, text)
}

// appendLocked adds the next log entry. An entry is never refused: the
// process must keep running and its output keep being drained whatever
// the disk does. One the log cannot take waits in the task's tail, in
// memory, and goes to the log once it can (tail.go); seq numbers stay
// without gaps because only an entry in the log, or kept for good in mem,
// takes one.
func (t *task) appendLocked(stream, text string) {
	line := tailLine{at: time.Now().UTC(), stream: stream, text: t.mask.mask(text)}
	if t.tail.empty() {
		err := t.writeLocked(line)
		if err == nil {
			return
		}
		t.tail.failed(err)
	}
	t.tail.push(line)
	if t.tail.due() {
		t.flushLocked()
	}
}

// writeLocked writes line as the next entry of the log file.
func (t *task) writeLocked(line tailLine) error {
	e := protocol.LogEntry{Seq: t.lastSeq + 1, Time: line.at, Stream: line.stream, Text: line.text}
	if err := t.writeEntryLocked(e); err != nil {
		return err
	}
	t.lastSeq++
	return nil
}

// writeEntryLocked writes e, the entry after diskSeq, to the log file.
func (t *task) writeEntryLocked(e protocol.LogEntry) error {
	if t.log == nil {
		return errNoLog
	}
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode task log entry: %w", err)
	}
	b = append(b, '\n')
	if _, err := t.log.Write(b); err != nil {
		// Cut off whatever part of the line made it, so the file stays
		// one entry per line.
		t.log.Truncate(t.logSize)
		return fmt.Errorf("write task log: %w", err)
	}
	t.logSize += int64(len(b))
	t.diskSeq = e.Seq
	t.notifyLocked()
	return nil
}

// lineWriter turns a process's output into log entries, one per line.
// Lines longer than maxLine are split, at a UTF-8 boundary where there is
// one near, so a multi-byte character is not cut in two.
type lineWriter struct {
	t      *task
	stream string
	buf    []byte
	// service acts on a service message of the script (package
	// servicemsg), or on the reason a line that looks like one is not,
	// and returns what the log says instead of the line. nil for agents
	// that do not read service messages.
	service func(servicemsg.Message, error) string
}

// Write never fails: a failure would stop exec draining the pipe, and the
// process would then block on its next write.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	rest := w.buf
	for {
		i := bytes.IndexByte(rest, '\n')
		if i >= 0 && i <= maxLine {
			w.emit(rest[:i])
			rest = rest[i+1:]
			continue
		}
		// A line too long for one entry is cut, but never through a
		// sensitive value, which would then be masked in neither part:
		// the cut waits until a whole value could follow it.
		if len(rest) > maxLine+w.t.mask.reach() {
			cut := w.t.mask.safeCut(rest, splitPoint(rest))
			w.emit(rest[:cut])
			rest = rest[cut:]
			continue
		}
		break
	}
	w.buf = append(w.buf[:0], rest...)
	return len(p), nil
}

// flush logs a last line that had no newline.
func (w *lineWriter) flush() {
	if w != nil && len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
}

func (w *lineWriter) emit(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r")) // Windows line ends
	if w.stream == streamStdout && w.service != nil && bytes.HasPrefix(line, []byte(servicemsg.Prefix)) {
		if msg, ok, err := servicemsg.Parse(string(line)); ok {
			w.t.append(streamAgent, w.service(msg, err))
			return
		}
	}
	w.t.append(w.stream, string(line))
}

// splitPoint is where to cut b (longer than maxLine): before the rune
// that starts at or just below maxLine, or at maxLine if b is not UTF-8
// there.
func splitPoint(b []byte) int {
	for i := maxLine; i > maxLine-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			return i
		}
	}
	return maxLine
}
