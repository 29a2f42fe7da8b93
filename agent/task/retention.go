package task

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent/internal/diskfree"
	"github.com/tendrildeploy/tendril/protocol"
)

// Disk retention: finished task folders (<home>/Work/<ticket>, with their
// log, pushed packages and artifacts) are removed by the machine policy's
// rule, protocol.WorkRetention.
//
// What is never removed: the folder of a task running or waiting for its
// turn (it is in Runner.tasks), of a finished task whose end the disk did
// not take yet (Runner.kept), and any folder without result.json: a
// task being started, files being pushed for a task not started yet, a
// task an agent restart could not mark failed. Only a finished task is
// over, and only its folder is the retention's to remove.
//
// What goes, of the finished ones, newest first by the time they finished:
//
//   - Beyond the newest Keep, those that finished more than KeepGrace ago.
//     The grace is for the coordinator: after a reconnect it reads the end
//     of the log of a task that finished while it was away, and an
//     operator who runs many tasks an hour expects them all to reach the
//     coordinator whatever Keep says.
//   - While free space is below MinFree, the oldest that finished more than
//     FloorGrace ago, Keep notwithstanding, one at a time until free space
//     is back above the floor. A full disk fails every deployment; a log
//     a coordinator did not finish reading fails only the showing of one.
//     FloorGrace still lets a coordinator following a task live read its
//     end.
//
// A folder is first renamed to .removing-<ticket> (under the ticket's
// lock, so a Start of the same ticket sees it either whole or gone), then
// removed; what a failed removal leaves is retried at the next cleanup.

// Retention defaults and timings.
const (
	// DefaultWorkKeep is how many finished task folders an agent keeps
	// until a coordinator says otherwise (the machine policy's default).
	DefaultWorkKeep = 50
	// KeepGrace is how long a finished task's folder is kept whatever
	// Keep says, while free space is above the floor.
	KeepGrace = time.Hour
	// FloorGrace is how long a finished task's folder is kept while free
	// space is below the floor.
	FloorGrace = time.Minute
	// DefaultRetentionInterval is how often RunRetention cleans up when
	// no task finishes.
	DefaultRetentionInterval = 10 * time.Minute
)

// removingPrefix names a task folder on its way out. Tickets never start
// with a dot, so it cannot be a task's.
const removingPrefix = ".removing-"

// DefaultRetention is the rule an agent applies before a coordinator told
// it one: keep the last DefaultWorkKeep, no free-space floor.
func DefaultRetention() protocol.WorkRetention {
	return protocol.WorkRetention{Keep: DefaultWorkKeep}
}

// ValidateRetention checks a rule from a coordinator.
func ValidateRetention(rule protocol.WorkRetention) error {
	switch {
	case rule.Keep < 0:
		return fmt.Errorf("work retention: keep must not be negative, got %d", rule.Keep)
	case rule.MinFree < 0:
		return fmt.Errorf("work retention: min free must not be negative, got %d bytes", rule.MinFree)
	}
	return nil
}

// retention is the Runner's retention state. Its zero value is ready:
// the default rule, never cleaned.
type retention struct {
	once sync.Once
	// kick wakes RunRetention: a task finished or the rule changed.
	kick chan struct{}
	// clean serialises cleanups.
	clean sync.Mutex
	// seen holds the finished folders an earlier cleanup measured, under
	// clean. A finished task's folder does not change until retention
	// removes it, so a cleanup measures only the folders new since the
	// last: it runs after every task, and walking every folder kept (the
	// newest Keep, plus an hour of any more) was 40% of a busy agent's
	// CPU in the task round trip's profile, growing with the folders.
	seen map[string]finishedFolder

	mu      sync.Mutex
	rule    *protocol.WorkRetention // nil: DefaultRetention
	report  protocol.WorkReport     // of the last cleanup
	removed int64                   // since the Runner was made
	// freeSpace reads free space under the Work folder; tests replace it.
	freeSpace func(path string) int64
}

func (rt *retention) kicks() chan struct{} {
	rt.once.Do(func() { rt.kick = make(chan struct{}, 1) })
	return rt.kick
}

// wake asks RunRetention for a cleanup; one pending is enough.
func (rt *retention) wake() {
	select {
	case rt.kicks() <- struct{}{}:
	default:
	}
}

func (rt *retention) current() protocol.WorkRetention {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.rule == nil {
		return DefaultRetention()
	}
	return *rt.rule
}

func (rt *retention) free(path string) int64 {
	rt.mu.Lock()
	f := rt.freeSpace
	rt.mu.Unlock()
	if f == nil {
		return diskfree.Free(path)
	}
	return f(path)
}

// SetRetention replaces the retention rule, the coordinator's, and asks
// for a cleanup if it changed.
func (r *Runner) SetRetention(rule protocol.WorkRetention) error {
	if err := ValidateRetention(rule); err != nil {
		return err
	}
	rt := &r.retention
	rt.mu.Lock()
	changed := rt.rule == nil || *rt.rule != rule
	rt.rule = &rule
	rt.mu.Unlock()
	if changed {
		r.log.Info("work retention rule set", zap.Int("keep", rule.Keep), zap.Int64("min_free", rule.MinFree))
		rt.wake()
	}
	return nil
}

// Retention returns the rule in force.
func (r *Runner) Retention() protocol.WorkRetention { return r.retention.current() }

// WorkReport says what the Work folder holds and what the last cleanup
// did: folders counted now, bytes as of the last cleanup.
func (r *Runner) WorkReport() protocol.WorkReport {
	rt := &r.retention
	rt.mu.Lock()
	rep := rt.report
	rep.RemovedTotal = rt.removed
	rt.mu.Unlock()
	rep.Rule = rt.current()
	rep.Tasks = 0
	if entries, err := os.ReadDir(r.cfg.Dir); err == nil {
		for _, e := range entries {
			if e.IsDir() && ValidateTicket(e.Name()) == nil {
				rep.Tasks++
			}
		}
	}
	r.mu.Lock()
	rep.Running = len(r.tasks)
	r.mu.Unlock()
	return rep
}

// RunRetention cleans up at once, then after every task that finishes,
// whenever the rule changes, and every interval (DefaultRetentionInterval
// if 0), until ctx is done. Failures are logged; the next cleanup tries
// again.
func (r *Runner) RunRetention(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultRetentionInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := r.CleanWork(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("work retention failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.retention.kicks():
		}
	}
}

// finishedFolder is a finished task's folder, a candidate for removal.
type finishedFolder struct {
	ticket   string
	finished time.Time
	bytes    int64
}

// CleanWork applies the retention rule once (see the top of this file)
// and returns the report it leaves. The error is for a Work folder that
// cannot be read; a folder that cannot be removed is logged and left for
// the next cleanup.
func (r *Runner) CleanWork(ctx context.Context) (protocol.WorkReport, error) {
	rt := &r.retention
	rt.clean.Lock()
	defer rt.clean.Unlock()
	// What the disk did not take of finished tasks goes first, should it
	// take it now.
	r.persistKept()
	rule := rt.current()
	entries, err := os.ReadDir(r.cfg.Dir)
	if err != nil {
		return protocol.WorkReport{}, fmt.Errorf("clean work folder: %w", err)
	}
	now := time.Now()
	var (
		total    int64
		finished []finishedFolder
		tasks    int
	)
	// Rebuilt from this listing: a folder gone by other means leaves it.
	seen := make(map[string]finishedFolder, len(rt.seen))
	defer func() { rt.seen = seen }()
	for _, e := range entries {
		name := e.Name()
		if f, ok := rt.seen[name]; ok {
			total += f.bytes
			tasks++
			finished = append(finished, f)
			seen[name] = f
			continue
		}
		path := filepath.Join(r.cfg.Dir, name)
		if strings.HasPrefix(name, removingPrefix) {
			// Left by a removal that failed, or an agent stopped in the
			// middle of one.
			if err := os.RemoveAll(path); err != nil {
				r.log.Warn("could not remove a task folder left by an earlier cleanup", zap.String("path", path), zap.Error(err))
				total += treeSize(path)
			}
			continue
		}
		size := treeSize(path)
		total += size
		if !e.IsDir() || ValidateTicket(name) != nil {
			continue
		}
		tasks++
		if at, ok := r.finishedAt(name); ok {
			f := finishedFolder{ticket: name, finished: at, bytes: size}
			finished = append(finished, f)
			seen[name] = f
		}
	}
	// Newest first; ties by ticket, so that cleanups agree on the order.
	slices.SortFunc(finished, func(a, b finishedFolder) int {
		if c := b.finished.Compare(a.finished); c != 0 {
			return c
		}
		return cmp.Compare(a.ticket, b.ticket)
	})

	removed := 0
	var freed int64
	remove := func(f finishedFolder, reason string) bool {
		// Gone, or measured again next time: a folder that could not be
		// removed may have been replaced.
		delete(seen, f.ticket)
		if !r.removeFinished(ctx, f.ticket) {
			return false
		}
		removed++
		freed += f.bytes
		r.log.Info("task folder removed by work retention", zap.String("ticket", f.ticket),
			zap.Time("finished_at", f.finished), zap.Int64("bytes", f.bytes), zap.String("reason", reason))
		return true
	}
	var left []finishedFolder // oldest last, as finished is
	for i, f := range finished {
		if i >= rule.Keep && now.Sub(f.finished) >= KeepGrace && remove(f, "keep") {
			continue
		}
		left = append(left, f)
	}
	rt.mu.Lock()
	wasBelow := rt.report.BelowFloor
	rt.mu.Unlock()
	below := false
	if rule.MinFree > 0 {
		free := rt.free(r.cfg.Dir)
		// Oldest first, one at a time, reading free space again after
		// each: the floor asks for space, not for a number of folders.
		for i := len(left) - 1; i >= 0 && free >= 0 && free < rule.MinFree && ctx.Err() == nil; i-- {
			if f := left[i]; now.Sub(f.finished) >= FloorGrace && remove(f, "free space below the floor") {
				free = rt.free(r.cfg.Dir)
			}
		}
		below = free >= 0 && free < rule.MinFree
		// Said once when it starts, not at every cleanup while it lasts;
		// the health report carries it meanwhile.
		if below && !wasBelow {
			r.log.Warn("free space is below the work retention floor and no more finished task folders can be removed",
				zap.Int64("free", free), zap.Int64("min_free", rule.MinFree))
		}
	}
	if removed > 0 {
		r.log.Info("work retention cleaned up", zap.Int("removed", removed), zap.Int64("freed_bytes", freed),
			zap.Int("finished_kept", len(finished)-removed), zap.Int("keep", rule.Keep))
	}

	rt.mu.Lock()
	rt.removed += int64(removed)
	rt.report = protocol.WorkReport{
		Tasks: tasks - removed, Bytes: total - freed, LastCleanup: now.UTC(),
		LastRemoved: removed, BelowFloor: below,
	}
	rt.mu.Unlock()
	return r.WorkReport(), nil
}

// finishedAt reports whether the ticket's task is finished (not in
// memory, running or kept, result.json written) and when it finished.
func (r *Runner) finishedAt(ticket string) (time.Time, bool) {
	r.mu.Lock()
	_, live := r.tasks[ticket]
	_, kept := r.kept[ticket]
	r.mu.Unlock()
	if live || kept {
		return time.Time{}, false
	}
	dir := r.taskDir(ticket)
	res, err := readResult(dir)
	if err == nil && !res.FinishedAt.IsZero() {
		return res.FinishedAt, true
	}
	// A result that cannot be read or has no time: the file's own time
	// is the next best thing. No result file means not finished.
	st, serr := os.Stat(filepath.Join(dir, resultFile))
	if serr != nil {
		return time.Time{}, false
	}
	return st.ModTime(), true
}

// removeFinished removes a finished task's folder, holding the ticket's
// lock so that a Start of the same ticket never sees half a folder. It
// reports whether the folder is gone from the ticket's name.
func (r *Runner) removeFinished(ctx context.Context, ticket string) bool {
	unlock, err := r.tickets.Lock(ctx, ticket)
	if err != nil {
		return false // ctx ended: the cleanup is over
	}
	dir := r.taskDir(ticket)
	// Checked again under the lock: finished may have been true of an
	// earlier look only if the folder was replaced meanwhile.
	if _, ok := r.finishedAt(ticket); !ok {
		unlock()
		return false
	}
	trash := filepath.Join(r.cfg.Dir, removingPrefix+ticket)
	err = os.Rename(dir, trash)
	unlock()
	if err != nil {
		r.log.Warn("could not remove a finished task's folder", zap.String("ticket", ticket), zap.Error(err))
		return false
	}
	if err := os.RemoveAll(trash); err != nil {
		// The ticket is gone already; the rest goes at the next cleanup.
		r.log.Warn("could not remove all of a finished task's folder; the next cleanup tries again",
			zap.String("ticket", ticket), zap.Error(err))
	}
	return true
}

// treeSize is the size of the files under path (path itself if a file).
// Files that vanish while it counts are skipped.
func treeSize(path string) int64 {
	var n int64
	filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished or unreadable: counted as nothing, not a failure
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
