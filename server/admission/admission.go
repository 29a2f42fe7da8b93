// Package admission keeps a reconnecting fleet, and whoever floods the
// agent port, from overwhelming the coordinator: a bounded number of
// handshakes at once with a short queue in front of them, connections
// that have not said a word kept out of both, a cap per source address,
// and the window over which a fleet is asked to spread its reconnects.
package admission

import (
	"container/list"
	"context"
	"net"
	"sync"
	"time"
)

// Config sizes a Gate.
type Config struct {
	// Slots is how many handshakes run at once. Handshakes cost CPU
	// (TLS), so only that many do.
	Slots int
	// Queue is how many connections that have sent their first byte may
	// wait for a slot. Those waiting for their first byte have places of
	// their own (Silent): the two never share places, so connections that
	// say nothing cannot crowd out those that wait for a slot.
	Queue int
	// Wait is how long a connection may wait in the queue for a slot,
	// unless Ticket.Acquire is given longer.
	Wait time.Duration
	// PerSource caps the handshakes in progress of one source (see
	// Gate.Arrive). 0 sets no cap.
	PerSource int
	// Silent is how many connections may be waiting for their first
	// byte; 0 means Queue.
	Silent int
	// SilentPerSource caps the connections of one source waiting for
	// their first byte. 0 sets no cap but Silent's.
	SilentPerSource int
}

// Gate decides which connections start a handshake, and when.
//
// A connection goes through three stages: silent (accepted, its first
// byte not yet read), then waiting for a slot, then handshaking in a slot
// until Release. A slot is taken only once a connection has sent a byte:
// a TLS client sends its ClientHello as soon as it is connected, so a
// connection that has sent nothing costs no CPU and must not hold one of
// the few slots whose purpose is to bound CPU. That is what let 2,000
// silent sockets lock agents out for half a minute (issue 19): each held
// a slot until the 10 s handshake deadline while the agents queued behind
// them were shed after 5 s.
//
// Silent connections never wait for room: where a limit on them is
// reached (SilentPerSource for the source, or Queue overall), the oldest
// silent one is closed to make room for the newcomer. A real agent's first byte
// arrives with, or right after, its TCP handshake, so the connection
// that has been silent longest is the one least likely to be an agent,
// and a newcomer, even from the flooding address (a NAT gateway shared
// with the flooder), always gets its turn to speak.
//
// A connection that has spoken takes a free slot if its source has fewer
// than PerSource handshakes in progress; otherwise it waits in a bounded
// queue for a moment instead of being closed. Closing it would send the
// agent into a longer backoff after every attempt, which is what
// stretches a reconnect storm (measured in BENCHMARKS.md): the
// coordinator turned away work it could have done a second later. Only
// when the queue is full, or the wait runs out, is the connection shed.
// The per-source cap holds such a connection in the queue rather than
// shedding it, so that a fleet behind one NAT address is slowed to
// PerSource handshakes at once, never refused for it.
type Gate struct {
	cfg Config

	mu      sync.Mutex
	silent  list.List // *Ticket not yet spoken, oldest first
	waiting list.List // *Ticket waiting for a slot, oldest first
	busy    int       // slots taken
	sources map[string]*source
	// served counts the slots released lately, the rate at which the
	// gate admits handshakes, which Later schedules by.
	served servedRing
	// next is the next free moment of Later's reservation clock.
	next time.Time
	now  func() time.Time
}

// source is what one source address has in the gate.
type source struct {
	silent  list.List // its *Ticket not yet spoken, oldest first
	busy    int       // its handshakes in progress
	waiting int       // its tickets in the queue
}

type state int

const (
	stateSilent  state = iota // accepted, no byte read yet
	stateSpoken               // first byte read, no slot yet
	stateWaiting              // in the queue for a slot
	stateBusy                 // holds a slot
	stateDone                 // released, or closed to make room
)

// Ticket is one connection's way through a Gate, from Arrive to Release.
// Its methods are called from the one goroutine handling the connection.
type Ticket struct {
	g      *Gate
	source string
	evict  func()

	// Guarded by g.mu.
	state   state
	elem    *list.Element // in g.silent or g.waiting
	srcElem *list.Element // in the source's silent list
	granted chan struct{} // closed when a waiting ticket gets a slot
	// queued is set once the ticket waited in the queue; only the
	// connection's own goroutine reads it, after Acquire.
	queued bool
}

// New returns a gate sized by cfg.
func New(cfg Config) *Gate {
	if cfg.Silent <= 0 {
		cfg.Silent = cfg.Queue
	}
	return &Gate{cfg: cfg, sources: make(map[string]*source), now: time.Now}
}

// Arrive registers a new connection from src that has not sent a byte
// yet, and returns its ticket. It always admits the connection: if the
// source, or the gate, already has as many silent connections as it may
// hold, the oldest of them is closed to make room (its evict function is
// called, without the gate's lock held; it must make the connection's
// pending read fail). src "" is exempt from the per-source cap.
func (g *Gate) Arrive(src string, evict func()) *Ticket {
	t := &Ticket{g: g, source: src, evict: evict}
	var victims []*Ticket
	g.mu.Lock()
	// The newcomer goes in first, at the back: what is over a limit then
	// is at the front, and never the newcomer.
	s := g.source(src)
	if s != nil {
		t.srcElem = s.silent.PushBack(t)
	}
	t.elem = g.silent.PushBack(t)
	if s != nil && g.cfg.SilentPerSource > 0 && s.silent.Len() > g.cfg.SilentPerSource {
		v := s.silent.Front().Value.(*Ticket)
		g.drop(v)
		victims = append(victims, v)
	}
	if g.silent.Len() > max(g.cfg.Silent, 1) {
		v := g.silent.Front().Value.(*Ticket)
		g.drop(v)
		victims = append(victims, v)
	}
	g.mu.Unlock()
	for _, v := range victims {
		v.evict()
	}
	return t
}

// source returns src's entry, made if missing; nil for the exempt "".
// Called with g.mu held.
func (g *Gate) source(src string) *source {
	if src == "" {
		return nil
	}
	s := g.sources[src]
	if s == nil {
		s = &source{}
		g.sources[src] = s
	}
	return s
}

// forget removes src's entry once it holds nothing, so that the map does
// not grow with every address that ever connected. Called with g.mu held.
func (g *Gate) forget(src string) {
	if s := g.sources[src]; s != nil && s.busy == 0 && s.silent.Len() == 0 && s.waiting == 0 {
		delete(g.sources, src)
	}
}

// Queued reports whether Acquire had the connection wait in the queue
// (however the wait ended). Call it after Acquire, from the same
// goroutine.
func (t *Ticket) Queued() bool { return t.queued }

// Spoke records that the connection sent its first byte. It reports
// false if the connection was closed to make room meanwhile: its caller
// then gives up on it.
func (t *Ticket) Spoke() bool {
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.state != stateSilent {
		return false
	}
	g.removeSilent(t)
	t.state = stateSpoken
	return true
}

// TryTake takes a handshake slot for a connection that has spoken if one
// may be taken at once, and reports whether it did.
func (t *Ticket) TryTake() bool {
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.state != stateSpoken || !g.mayTake(t.source) {
		return false
	}
	g.take(t)
	return true
}

// Acquire takes a handshake slot for a connection that has spoken,
// waiting in the queue if none may be taken at once: for up to the
// gate's Wait, or up to long if long is longer (an agent that was told
// how long it may wait, protocol's wait line). queued, if not nil, is
// called once the connection has its place in the queue, before the
// wait. Acquire reports false, holding nothing, when the queue is full,
// the wait runs out or ctx ends: the connection is then to be shed.
func (t *Ticket) Acquire(ctx context.Context, long time.Duration, queued func()) bool {
	g := t.g
	wait := max(g.cfg.Wait, long)
	g.mu.Lock()
	if t.state != stateSpoken {
		g.mu.Unlock()
		return false
	}
	if g.mayTake(t.source) {
		g.take(t)
		g.mu.Unlock()
		return true
	}
	if g.waiting.Len() >= g.queueLimit(wait) {
		g.mu.Unlock()
		return false
	}
	t.state = stateWaiting
	t.queued = true
	t.granted = make(chan struct{})
	t.elem = g.waiting.PushBack(t)
	if s := g.source(t.source); s != nil {
		s.waiting++
	}
	g.mu.Unlock()
	if queued != nil {
		queued()
	}

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-t.granted:
		return true
	case <-timer.C:
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.state == stateBusy {
		// Granted as the wait ended: give it to the next in line.
		g.release(t)
		return false
	}
	g.unqueue(t)
	t.state = stateSpoken
	g.forget(t.source)
	return false
}

// Release gives back whatever the ticket holds: its place among the
// silent connections, in the queue, or its slot, which goes to the
// oldest waiting connection whose source is under its cap. Idempotent.
func (t *Ticket) Release() {
	g := t.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.release(t)
}

// release is Release with g.mu held.
func (g *Gate) release(t *Ticket) {
	switch t.state {
	case stateSilent:
		g.removeSilent(t)
	case stateWaiting:
		g.unqueue(t)
		g.forget(t.source)
	case stateBusy:
		g.served.add(g.now())
		g.busy--
		if s := g.sources[t.source]; s != nil {
			s.busy--
			g.forget(t.source)
		}
		g.grant()
	}
	t.state = stateDone
}

// mayTake reports whether a connection from src may take a slot now.
// Called with g.mu held.
func (g *Gate) mayTake(src string) bool {
	if g.busy >= g.cfg.Slots {
		return false
	}
	if src == "" || g.cfg.PerSource <= 0 {
		return true
	}
	s := g.sources[src]
	return s == nil || s.busy < g.cfg.PerSource
}

// take gives t a slot. Called with g.mu held.
func (g *Gate) take(t *Ticket) {
	g.busy++
	if s := g.source(t.source); s != nil {
		s.busy++
	}
	t.state = stateBusy
}

// grant hands free slots to waiting connections, oldest first, skipping
// those whose source is at its cap. It stops once every connection left
// waiting is of a source at its cap: a fleet behind one address fills
// the queue with connections of that one source, and walking all of them
// at every release made the walk the gate's own cost (7% of the
// coordinator's CPU in the cold ramp of 10,000 agents from the
// simulator's one address). Called with g.mu held.
func (g *Gate) grant() {
	skipped := 0 // waiting connections of the sources found at their cap
	var capped map[*source]bool
	for e := g.waiting.Front(); e != nil && g.busy < g.cfg.Slots && skipped < g.waiting.Len(); {
		next := e.Next()
		t := e.Value.(*Ticket)
		if g.mayTake(t.source) {
			g.unqueue(t)
			g.take(t)
			close(t.granted)
		} else if s := g.sources[t.source]; s != nil && !capped[s] {
			if capped == nil {
				capped = make(map[*source]bool)
			}
			capped[s] = true
			skipped += s.waiting
		}
		e = next
	}
}

// unqueue takes a waiting ticket out of the queue. Called with g.mu held.
func (g *Gate) unqueue(t *Ticket) {
	g.waiting.Remove(t.elem)
	t.elem = nil
	if s := g.sources[t.source]; s != nil {
		s.waiting--
	}
}

// drop closes a silent ticket to make room; the caller calls its evict.
// Called with g.mu held.
func (g *Gate) drop(t *Ticket) {
	g.removeSilent(t)
	t.state = stateDone
}

// removeSilent takes a silent ticket out of the silent lists. Called with
// g.mu held.
func (g *Gate) removeSilent(t *Ticket) {
	g.silent.Remove(t.elem)
	t.elem = nil
	if s := g.sources[t.source]; s != nil && t.srcElem != nil {
		s.silent.Remove(t.srcElem)
		t.srcElem = nil
		g.forget(t.source)
	}
}

// Source is the source a connection from addr counts against: its IPv4
// address, or the /64 network of an IPv6 one, since a single IPv6 host
// is usually given a whole /64 and could otherwise pick a fresh address
// for each connection. An address that is not IP is its own source.
func Source(addr net.Addr) string {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(addr.String())
		if err != nil {
			return addr.String()
		}
		if ip = net.ParseIP(host); ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Saturated reports whether every slot that may be taken is: the gate
// has connections waiting in the queue, or no slot free.
func (g *Gate) Saturated() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting.Len() > 0 || g.busy >= g.cfg.Slots
}

// Stats is what a gate holds at one moment.
type Stats struct {
	Silent  int // connections waiting for their first byte
	Waiting int // connections in the queue for a slot
	Busy    int // slots taken
	Sources int // source addresses with a silent connection or a slot
}

// Stats reports what the gate holds now; a gate at rest holds nothing.
func (g *Gate) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	sources := 0
	for _, s := range g.sources {
		if s.busy > 0 || s.silent.Len() > 0 {
			sources++
		}
	}
	return Stats{Silent: g.silent.Len(), Waiting: g.waiting.Len(), Busy: g.busy, Sources: sources}
}

// reconnectRate is the rate, in sessions a second, at which the
// coordinator asks a fleet to come back: after a restart (the spread of
// the GoAway at shutdown) and after a crash (the window named in every
// Welcome, which agents use when their session breaks without a GoAway).
// It is below what one coordinator on two cores handshakes while the
// fleet simulator shares the cores (BENCHMARKS.md), so the returning fleet
// is served as it arrives rather than mostly shed and retried.
const reconnectRate = 500

// ReconnectSpread is the window over which a fleet of n agents is asked to
// spread its reconnects: about a second per reconnectRate agents, at most
// a minute.
func ReconnectSpread(n int) time.Duration {
	return min(time.Duration(n/reconnectRate+1)*time.Second, time.Minute)
}
