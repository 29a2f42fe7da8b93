package fleet

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Flood holds silent TCP connections open to an address, as the probe of
// issue 19 did to the coordinator's agent port: each connects and never
// sends a byte. A connection the other side closes is opened again after
// a pause, so that the flood keeps its size for as long as it runs.
type Flood struct {
	addr    string
	reopen  time.Duration
	reopens context.Context // ends the reopening
	cancel  context.CancelFunc
	stopAll context.CancelFunc // closes every connection too
	wg      sync.WaitGroup

	open, opened, closedByPeer, dialFailed atomic.Int64
}

// FloodStats is a snapshot of a flood.
type FloodStats struct {
	Open         int64 // connections open now
	Opened       int64 // connections opened in all
	ClosedByPeer int64 // connections the other side closed
	DialFailed   int64 // connection attempts that failed
}

// StartFlood opens n silent connections to addr and returns once each
// has been opened (or has failed to) once. Every connection the other
// side closes is opened again after reopen. Stop ends the flood.
func StartFlood(ctx context.Context, addr string, n int, reopen time.Duration) (*Flood, error) {
	if n <= 0 {
		return nil, fmt.Errorf("flood: connection count must be positive, got %d", n)
	}
	all, stopAll := context.WithCancel(ctx)
	reopens, cancel := context.WithCancel(all)
	f := &Flood{addr: addr, reopen: reopen, reopens: reopens, cancel: cancel, stopAll: stopAll}
	var first sync.WaitGroup
	first.Add(n)
	for range n {
		f.wg.Go(func() { f.hold(all, first.Done) })
	}
	first.Wait()
	return f, nil
}

// hold keeps one connection of the flood open until ctx ends, opening it
// again after each close once f.reopen has passed, unless reopening was
// stopped. firstTry is called after the first attempt.
func (f *Flood) hold(ctx context.Context, firstTry func()) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", f.addr)
		if firstTry != nil {
			firstTry()
			firstTry = nil
		}
		if err != nil {
			f.dialFailed.Add(1)
		} else {
			f.open.Add(1)
			f.opened.Add(1)
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			// Nothing is ever sent; a read returns only when the other
			// side closes the connection, or when ctx closed it here.
			conn.Read(make([]byte, 1))
			if stop() {
				f.closedByPeer.Add(1)
			}
			conn.Close()
			f.open.Add(-1)
		}
		t := time.NewTimer(f.reopen)
		select {
		case <-t.C:
		case <-f.reopens.Done():
			t.Stop()
			return
		}
	}
}

// StopReopening lets the connections open now stay open, and opens no
// more: the flood ends as the other side closes them.
func (f *Flood) StopReopening() { f.cancel() }

// Stop closes every connection of the flood and waits for its goroutines
// to end.
func (f *Flood) Stop() {
	f.cancel()
	f.stopAll()
	f.wg.Wait()
}

// Stats returns a snapshot of the flood.
func (f *Flood) Stats() FloodStats {
	return FloodStats{Open: f.open.Load(), Opened: f.opened.Load(), ClosedByPeer: f.closedByPeer.Load(), DialFailed: f.dialFailed.Load()}
}
