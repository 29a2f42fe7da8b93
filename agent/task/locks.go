package task

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/tendrildeploy/tendril/protocol"
)

// ErrInvalidIsolation means a TaskStart whose isolation or locks cannot
// be right.
var ErrInvalidIsolation = errors.New("invalid task isolation")

// claim is what a task holds while it runs: the whole agent (full
// isolation), or a share of it plus its named locks. In lock terms every
// task takes an agent-wide lock, exclusively for full isolation and
// shared otherwise, and its named locks exclusively; a task takes all of
// them at once or none, under one mutex, so no two tasks can each hold
// part of what the other needs: there is no order to get wrong and no
// deadlock.
type claim struct {
	ticket string
	name   string
	full   bool
	locks  []string // sorted, no duplicates
	// granted is set, under lockTable.mu, once the task holds its locks.
	granted bool
}

// newClaim checks a TaskStart's isolation and locks.
func newClaim(req protocol.TaskStart) (*claim, error) {
	c := &claim{ticket: req.Ticket, name: req.Name}
	switch req.Isolation {
	case "", protocol.IsolationFull:
		c.full = true
	case protocol.IsolationNone:
	default:
		return nil, fmt.Errorf("%w: isolation %q: use %q or %q", ErrInvalidIsolation, req.Isolation, protocol.IsolationFull, protocol.IsolationNone)
	}
	for _, l := range req.Locks {
		if l == "" {
			return nil, fmt.Errorf("%w: empty lock name", ErrInvalidIsolation)
		}
	}
	c.locks = slices.Compact(slices.Sorted(slices.Values(req.Locks)))
	return c, nil
}

// conflicts reports whether two claims cannot be held at once.
func (c *claim) conflicts(o *claim) bool {
	if c.full || o.full {
		return true
	}
	for _, l := range c.locks {
		if _, found := slices.BinarySearch(o.locks, l); found {
			return true
		}
	}
	return false
}

// describe names the task for the log line of a task waiting for it.
func (c *claim) describe() string {
	if c.name == "" {
		return "task " + c.ticket
	}
	return fmt.Sprintf("task %s (%s)", c.ticket, c.name)
}

// lockTable grants claims first come, first served: a claim waits for
// the holders it conflicts with and for the earlier waiters it conflicts
// with, so a stream of small tasks cannot starve a full-isolation one.
// It lives in memory only: an agent that restarts holds nothing, and the
// tasks of its previous process are failed by Recover.
type lockTable struct {
	mu    sync.Mutex
	held  []*claim
	queue []*claim
	// changed is closed and replaced whenever held or queue changes.
	changed chan struct{}
}

// blockerLocked returns what c waits for: the first holder it conflicts
// with, else the first waiter queued before it that it conflicts with;
// nil if nothing is in the way.
func (lt *lockTable) blockerLocked(c *claim) *claim {
	for _, h := range lt.held {
		if h.conflicts(c) {
			return h
		}
	}
	for _, w := range lt.queue {
		if w == c {
			break
		}
		if w.conflicts(c) {
			return w
		}
	}
	return nil
}

func (lt *lockTable) notifyLocked() {
	if lt.changed != nil {
		close(lt.changed)
	}
	lt.changed = make(chan struct{})
}

// free reports whether c would be granted now. It is a hint: a claim
// made meanwhile may take what it found free.
func (lt *lockTable) free(c *claim) bool {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return lt.blockerLocked(c) == nil
}

// tryLock grants c if nothing is in the way and returns nil; otherwise
// it queues c and returns what c waits for. A queued claim must then be
// waited for (wait) or given up (wait with a done ctx).
func (lt *lockTable) tryLock(c *claim) *claim {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if b := lt.blockerLocked(c); b != nil {
		lt.queue = append(lt.queue, c)
		return b
	}
	c.granted = true
	lt.held = append(lt.held, c)
	return nil
}

// wait waits until queued c is granted. Whenever what it waits for
// changes, onWait hears the new one. When ctx ends first, c leaves the
// queue and wait returns ctx's error; a claim granted meanwhile is
// granted, and wait returns nil.
func (lt *lockTable) wait(ctx context.Context, c *claim, onWait func(blocker *claim)) error {
	lt.mu.Lock()
	last := lt.blockerLocked(c)
	for {
		if c.granted {
			lt.mu.Unlock()
			return nil
		}
		if b := lt.blockerLocked(c); b != nil && b != last {
			last = b
			lt.mu.Unlock()
			onWait(b)
			lt.mu.Lock()
			continue
		}
		if lt.changed == nil {
			lt.changed = make(chan struct{})
		}
		changed := lt.changed
		lt.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			lt.mu.Lock()
			defer lt.mu.Unlock()
			if c.granted {
				return nil
			}
			lt.queue = slices.DeleteFunc(lt.queue, func(w *claim) bool { return w == c })
			lt.grantLocked() // those queued behind it may go now
			return ctx.Err()
		}
		lt.mu.Lock()
	}
}

// unlock gives back a granted claim's locks; a claim not granted is left.
func (lt *lockTable) unlock(c *claim) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if !c.granted {
		return
	}
	c.granted = false
	lt.held = slices.DeleteFunc(lt.held, func(h *claim) bool { return h == c })
	lt.grantLocked()
}

// grantLocked grants, in queue order, every waiter nothing is in the way
// of any more, and wakes the waiters.
func (lt *lockTable) grantLocked() {
	for i := 0; i < len(lt.queue); {
		w := lt.queue[i]
		if lt.blockerLocked(w) != nil {
			i++
			continue
		}
		w.granted = true
		lt.held = append(lt.held, w)
		lt.queue = slices.Delete(lt.queue, i, i+1)
	}
	lt.notifyLocked()
}
