package task

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tendrildeploy/tendril/protocol"
)

// Batching of a follow: a frame carries at most this many entries, or
// about this many bytes of them. One entry is below maxLine*6 bytes once
// encoded, so a frame stays well under protocol.MaxFrameSize.
const (
	maxBatchEntries = 500
	maxBatchBytes   = 512 << 10
)

// Follow sends the log of a task from sequence number from on (1 if
// lower) through send, in order and in batches, waiting for new entries
// while the task runs. Once the task has finished and every entry was
// sent, it returns the task's end. It works the same for a task that
// finished before the follow began, or was run by an earlier agent
// process: the log is read from disk. It returns early with send's error
// or when ctx is done.
func (r *Runner) Follow(ctx context.Context, ticket string, from int64, send func(protocol.TaskLog) error) (protocol.TaskEnd, error) {
	if err := ValidateTicket(ticket); err != nil {
		return protocol.TaskEnd{}, err
	}
	from = max(from, 1)
	r.mu.Lock()
	t := r.tasks[ticket]
	if t == nil {
		// Finished with part of it in memory only: served from there,
		// after one more try to write it down.
		if t = r.kept[ticket]; t != nil {
			r.persist(t)
		}
	}
	r.mu.Unlock()
	dir := r.taskDir(ticket)
	var res result
	if t == nil {
		// Finished (forget runs only after the result is written), or
		// never started.
		if !exists(filepath.Join(dir, infoFile)) {
			return protocol.TaskEnd{}, fmt.Errorf("follow task %s: %w", ticket, ErrUnknownTicket)
		}
		var err error
		if res, err = readResult(dir); err != nil {
			return protocol.TaskEnd{}, fmt.Errorf("follow task %s: it has no result and is not running: %w", ticket, err)
		}
	}
	if t != nil {
		// Each batch says whether the task still waits for its turn, so
		// the coordinator sees it start.
		inner := send
		send = func(l protocol.TaskLog) error {
			if st := t.state(); st == protocol.TaskQueued || st == protocol.TaskRunning {
				l.State = st
			}
			return inner(l)
		}
	}
	fd := &feed{path: filepath.Join(dir, logFile), from: from, next: 1, send: send}
	defer fd.close()
	if t == nil {
		if err := fd.read(-1); err != nil {
			return protocol.TaskEnd{}, fmt.Errorf("follow task %s: %w", ticket, err)
		}
		return endOf(res, fd.next-1), nil
	}
	for {
		last, disk, mem, done, changed := t.snapshot()
		if fd.next <= last {
			if fd.next <= disk {
				if err := fd.read(disk); err != nil {
					return protocol.TaskEnd{}, fmt.Errorf("follow task %s: %w", ticket, err)
				}
			}
			if err := fd.sendMem(mem, last); err != nil {
				return protocol.TaskEnd{}, fmt.Errorf("follow task %s: %w", ticket, err)
			}
			continue
		}
		if done != nil {
			// The result is set after the last entry was written, so
			// last is final and every entry up to it was sent.
			return endOf(*done, last), nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return protocol.TaskEnd{}, ctx.Err()
		}
	}
}

func endOf(res result, lastSeq int64) protocol.TaskEnd {
	return protocol.TaskEnd{State: res.State, ExitCode: res.ExitCode, Error: res.Error, LastSeq: lastSeq,
		Outputs: res.Outputs, Artifacts: res.Artifacts,
		FinishedAt: res.FinishedAt, LostLines: res.LostLines, LostReason: res.LostReason}
}

// feed reads a task's log file in order and sends the entries at or after
// from in batches.
type feed struct {
	path string
	f    *os.File // opened at the first read: a task just started may not have its log yet
	br   *bufio.Reader
	from int64
	next int64 // seq of the next line in the file
	send func(protocol.TaskLog) error
}

func (fd *feed) close() {
	if fd.f != nil {
		fd.f.Close()
	}
}

// open opens the log file if it is not open yet. A missing file is no
// entries (a task that failed before it had a log) when upto is negative,
// and an error when entries up to upto are known to exist.
func (fd *feed) open(upto int64) (ok bool, err error) {
	if fd.br != nil {
		return true, nil
	}
	f, err := os.Open(fd.path)
	if isNotExist(err) && upto < 0 {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open task log: %w", err)
	}
	fd.f, fd.br = f, bufio.NewReaderSize(f, 64<<10)
	return true, nil
}

// sendMem sends the entries of mem (those after the log file, kept in
// memory) from the next one the follower needs up to seq upto.
func (fd *feed) sendMem(mem []protocol.LogEntry, upto int64) error {
	var batch []protocol.LogEntry
	size := 0
	for _, e := range mem {
		if e.Seq < fd.next || e.Seq > upto {
			continue
		}
		if e.Seq != fd.next {
			return fmt.Errorf("task log kept in memory skips from entry %d to %d", fd.next, e.Seq)
		}
		fd.next++
		if e.Seq < fd.from {
			continue
		}
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode task log entry %d: %w", e.Seq, err)
		}
		n := len(b)
		if len(batch) > 0 && (len(batch) >= maxBatchEntries || size+n > maxBatchBytes) {
			if err := fd.send(protocol.TaskLog{Entries: batch}); err != nil {
				return err
			}
			batch, size = nil, 0
		}
		batch = append(batch, e)
		size += n
	}
	if fd.next <= upto {
		return fmt.Errorf("task log ends before entry %d", fd.next)
	}
	if len(batch) == 0 {
		return nil
	}
	return fd.send(protocol.TaskLog{Entries: batch})
}

// read sends the entries up to seq upto (to the end of the file if upto is
// negative), then flushes the last batch so nothing waits in a buffer while
// the follow waits for the task. Lines up to a known seq are complete: the
// writer counts an entry only once its whole line is written.
func (fd *feed) read(upto int64) error {
	if ok, err := fd.open(upto); !ok {
		return err
	}
	var batch []protocol.LogEntry
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := fd.send(protocol.TaskLog{Entries: batch})
		batch, size = nil, 0
		return err
	}
	for upto < 0 || fd.next <= upto {
		line, err := fd.br.ReadBytes('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			if upto >= 0 {
				return fmt.Errorf("task log ends before entry %d", fd.next)
			}
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read task log: %w", err)
		}
		var e protocol.LogEntry
		if err := json.Unmarshal(line, &e); err != nil || e.Seq != fd.next {
			return fmt.Errorf("task log is damaged at entry %d", fd.next)
		}
		fd.next++
		if e.Seq < fd.from {
			continue
		}
		if len(batch) > 0 && (len(batch) >= maxBatchEntries || size+len(line) > maxBatchBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, e)
		size += len(line)
	}
	return flush()
}
