package admission

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/internal/servertest"
)

// step is one move in a scenario played against a Gate.
type step struct {
	op   string // arrive, spoke, acquire, release, granted, stats
	name string // the connection
	src  string // arrive: its source
	// arrive: the connections closed to make room, in order.
	evicted []string
	// spoke: whether it was still admitted. acquire: "slot", "shed" or
	// "queued". granted: whether the queued acquire got its slot.
	want  any
	stats Stats // stats: what the gate holds
}

// player plays steps against a gate.
type player struct {
	t       *testing.T
	g       *Gate
	tickets map[string]*Ticket
	results map[string]chan bool // acquires under way
	mu      sync.Mutex
	evicted []string
}

func (p *player) play(i int, s step) {
	t := p.t
	t.Helper()
	switch s.op {
	case "arrive":
		p.mu.Lock()
		p.evicted = nil
		p.mu.Unlock()
		p.tickets[s.name] = p.g.Arrive(s.src, func() {
			p.mu.Lock()
			p.evicted = append(p.evicted, s.name)
			p.mu.Unlock()
		})
		p.mu.Lock()
		got := p.evicted
		p.mu.Unlock()
		if !slices.Equal(got, s.evicted) {
			t.Fatalf("step %d, %s arrives from %q: got %v closed to make room, want %v", i, s.name, s.src, got, s.evicted)
		}
	case "spoke":
		if got := p.tickets[s.name].Spoke(); got != s.want {
			t.Fatalf("step %d, %s spoke: got still admitted %v, want %v", i, s.name, got, s.want)
		}
	case "acquire":
		waiting := p.g.Stats().Waiting
		res := make(chan bool, 1)
		ctx := context.Background()
		if s.src == "cancelled" {
			c, cancel := context.WithCancel(ctx)
			cancel()
			ctx = c
		}
		go func() { res <- p.tickets[s.name].Acquire(ctx, 0, nil) }()
		switch s.want {
		case "slot", "shed":
			if got := <-res; got != (s.want == "slot") {
				t.Fatalf("step %d, %s acquires: got a slot %v, want %s", i, s.name, got, s.want)
			}
		case "queued":
			p.results[s.name] = res
			servertest.WaitFor(t, 10*time.Second, s.name+" in the queue", func() bool {
				return p.g.Stats().Waiting == waiting+1
			})
		}
	case "granted":
		if got := <-p.results[s.name]; got != s.want {
			t.Fatalf("step %d, %s's wait in the queue: got a slot %v, want %v", i, s.name, got, s.want)
		}
	case "release":
		p.tickets[s.name].Release()
	case "stats":
		if got := p.g.Stats(); got != s.stats {
			t.Fatalf("step %d: got %+v, want %+v", i, got, s.stats)
		}
	default:
		t.Fatalf("step %d: unknown op %q", i, s.op)
	}
}

func TestGate(t *testing.T) {
	const X, Y, Z = "192.0.2.1", "192.0.2.2", "192.0.2.3"
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{{
		name: "a silent connection holds no slot; one that spoke takes it",
		cfg:  Config{Slots: 1, Queue: 4, Wait: time.Hour, PerSource: 4},
		steps: []step{
			{op: "arrive", name: "mute", src: X},
			{op: "arrive", name: "agent", src: Y},
			{op: "spoke", name: "agent", want: true},
			{op: "acquire", name: "agent", want: "slot"},
			{op: "stats", stats: Stats{Silent: 1, Busy: 1, Sources: 2}},
			{op: "release", name: "mute"},
			{op: "release", name: "agent"},
			{op: "stats", stats: Stats{}},
		},
	}, {
		name: "at the source's cap a newcomer closes the source's oldest silent connection",
		cfg:  Config{Slots: 4, Queue: 16, Wait: time.Hour, SilentPerSource: 2},
		steps: []step{
			{op: "arrive", name: "x1", src: X},
			{op: "arrive", name: "x2", src: X},
			{op: "arrive", name: "y1", src: Y},
			{op: "arrive", name: "x3", src: X, evicted: []string{"x1"}},
			{op: "spoke", name: "x1", want: false},
			{op: "arrive", name: "x4", src: X, evicted: []string{"x2"}},
			{op: "spoke", name: "x4", want: true},
			// x4 spoke: X has one silent connection left, under its cap.
			{op: "arrive", name: "x5", src: X},
			{op: "stats", stats: Stats{Silent: 3, Sources: 2}},
			{op: "release", name: "x1"}, // closed already: nothing to give back
			{op: "release", name: "x3"},
			{op: "release", name: "x4"},
			{op: "release", name: "x5"},
			{op: "release", name: "y1"},
			{op: "stats", stats: Stats{}},
		},
	}, {
		name: "with every silent place taken the oldest anywhere is closed",
		cfg:  Config{Slots: 4, Queue: 2, Wait: time.Hour},
		steps: []step{
			{op: "arrive", name: "x1", src: X},
			{op: "arrive", name: "y1", src: Y},
			{op: "arrive", name: "z1", src: Z, evicted: []string{"x1"}},
			{op: "spoke", name: "y1", want: true},
			{op: "arrive", name: "z2", src: Z},
			{op: "stats", stats: Stats{Silent: 2, Sources: 1}},
		},
	}, {
		name: "the exempt source has no cap",
		cfg:  Config{Slots: 4, Queue: 16, Wait: time.Hour, PerSource: 1, SilentPerSource: 1},
		steps: []step{
			{op: "arrive", name: "ws1", src: ""},
			{op: "arrive", name: "ws2", src: ""},
			{op: "arrive", name: "ws3", src: ""},
			{op: "spoke", name: "ws1", want: true},
			{op: "spoke", name: "ws2", want: true},
			{op: "acquire", name: "ws1", want: "slot"},
			{op: "acquire", name: "ws2", want: "slot"},
			{op: "stats", stats: Stats{Silent: 1, Busy: 2}},
		},
	}, {
		name: "over its handshake cap a source waits in the queue while others pass",
		cfg:  Config{Slots: 4, Queue: 4, Wait: time.Hour, PerSource: 1},
		steps: []step{
			{op: "arrive", name: "x1", src: X},
			{op: "spoke", name: "x1", want: true},
			{op: "acquire", name: "x1", want: "slot"},
			{op: "arrive", name: "x2", src: X},
			{op: "spoke", name: "x2", want: true},
			{op: "acquire", name: "x2", want: "queued"},
			{op: "arrive", name: "y1", src: Y},
			{op: "spoke", name: "y1", want: true},
			{op: "acquire", name: "y1", want: "slot"},
			{op: "release", name: "x1"},
			{op: "granted", name: "x2", want: true},
			{op: "stats", stats: Stats{Busy: 2, Sources: 2}},
			{op: "release", name: "x2"},
			{op: "release", name: "y1"},
			{op: "stats", stats: Stats{}},
		},
	}, {
		name: "a freed slot goes to the oldest waiting connection whose source is under its cap",
		cfg:  Config{Slots: 2, Queue: 4, Wait: time.Hour, PerSource: 1},
		steps: []step{
			{op: "arrive", name: "x1", src: X},
			{op: "spoke", name: "x1", want: true},
			{op: "acquire", name: "x1", want: "slot"},
			{op: "arrive", name: "y1", src: Y},
			{op: "spoke", name: "y1", want: true},
			{op: "acquire", name: "y1", want: "slot"},
			{op: "arrive", name: "x2", src: X},
			{op: "spoke", name: "x2", want: true},
			{op: "acquire", name: "x2", want: "queued"},
			{op: "arrive", name: "z1", src: Z},
			{op: "spoke", name: "z1", want: true},
			{op: "acquire", name: "z1", want: "queued"},
			{op: "release", name: "y1"}, // x2 is older, but X is at its cap
			{op: "granted", name: "z1", want: true},
			{op: "release", name: "x1"},
			{op: "granted", name: "x2", want: true},
		},
	}, {
		name: "a full queue sheds",
		cfg:  Config{Slots: 1, Queue: 1, Wait: time.Hour},
		steps: []step{
			{op: "arrive", name: "a", src: X},
			{op: "spoke", name: "a", want: true},
			{op: "acquire", name: "a", want: "slot"},
			{op: "arrive", name: "b", src: Y},
			{op: "spoke", name: "b", want: true},
			{op: "acquire", name: "b", want: "queued"},
			{op: "arrive", name: "c", src: Z},
			{op: "spoke", name: "c", want: true},
			{op: "acquire", name: "c", want: "shed"},
			// A source counts while it has a silent connection or a slot.
			{op: "stats", stats: Stats{Waiting: 1, Busy: 1, Sources: 1}},
		},
	}, {
		name: "a wait that runs out sheds and gives its place back",
		cfg:  Config{Slots: 1, Queue: 1, Wait: time.Millisecond},
		steps: []step{
			{op: "arrive", name: "a", src: X},
			{op: "spoke", name: "a", want: true},
			{op: "acquire", name: "a", want: "slot"},
			{op: "arrive", name: "b", src: Y},
			{op: "spoke", name: "b", want: true},
			{op: "acquire", name: "b", want: "shed"},
			{op: "stats", stats: Stats{Busy: 1, Sources: 1}},
			{op: "release", name: "b"},
			{op: "release", name: "a"},
			{op: "stats", stats: Stats{}},
		},
	}, {
		name: "no slot after shutdown",
		cfg:  Config{Slots: 1, Queue: 1, Wait: time.Hour},
		steps: []step{
			{op: "arrive", name: "a", src: X},
			{op: "spoke", name: "a", want: true},
			{op: "acquire", name: "a", want: "slot"},
			{op: "arrive", name: "b", src: Y},
			{op: "spoke", name: "b", want: true},
			{op: "acquire", name: "b", src: "cancelled", want: "shed"},
			{op: "stats", stats: Stats{Busy: 1, Sources: 1}},
		},
	}, {
		name: "a closed connection cannot take a slot",
		cfg:  Config{Slots: 1, Queue: 1, Wait: time.Hour, SilentPerSource: 1},
		steps: []step{
			{op: "arrive", name: "a", src: X},
			{op: "arrive", name: "b", src: X, evicted: []string{"a"}},
			{op: "acquire", name: "a", want: "shed"},
			{op: "stats", stats: Stats{Silent: 1, Sources: 1}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &player{t: t, g: New(tt.cfg), tickets: map[string]*Ticket{}, results: map[string]chan bool{}}
			for i, s := range tt.steps {
				p.play(i, s)
			}
		})
	}
}

func TestSource(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 4000}, "192.0.2.7"},
		// One host's /64 is one source, whichever address it picks.
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 4000}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 4000}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 4000}, "2001:db8:1:3::/64"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "/run/x.sock"},
	}
	for _, tt := range tests {
		if got := Source(tt.addr); got != tt.want {
			t.Errorf("Source(%v): got %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestReconnectSpread(t *testing.T) {
	tests := []struct {
		agents int
		want   time.Duration
	}{{0, time.Second}, {499, time.Second}, {500, 2 * time.Second}, {10000, 21 * time.Second}, {1000000, time.Minute}}
	for _, tt := range tests {
		if got := ReconnectSpread(tt.agents); got != tt.want {
			t.Errorf("ReconnectSpread(%d): got %s, want %s", tt.agents, got, tt.want)
		}
	}
}

// TestGrantPastCappedSource: a slot that frees goes to the oldest waiting
// connection whose source is under its cap, however many of a capped
// source wait before it.
func TestGrantPastCappedSource(t *testing.T) {
	g := New(Config{Slots: 2, Queue: 10, Wait: time.Minute, PerSource: 1})
	arrive := func(src string) *Ticket {
		tk := g.Arrive(src, func() {})
		if !tk.Spoke() {
			t.Fatalf("%s: closed before it spoke", src)
		}
		return tk
	}
	a, c := arrive("a"), arrive("c")
	if !a.TryTake() || !c.TryTake() {
		t.Fatal("the first connections of a and c found no slot")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 10)
	queue := func(src string) {
		tk := arrive(src)
		go func() {
			if tk.Acquire(ctx, 0, nil) {
				got <- src
			}
		}()
	}
	for range 5 {
		queue("a")
	}
	queue("b")
	deadline := time.Now().Add(10 * time.Second)
	for g.Stats().Waiting != 6 {
		if time.Now().After(deadline) {
			t.Fatalf("queued: got %d, want 6", g.Stats().Waiting)
		}
		time.Sleep(time.Millisecond)
	}
	c.Release()
	select {
	case src := <-got:
		if src != "b" {
			t.Fatalf("the freed slot went to %s, want b (a is at its cap)", src)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the freed slot went to no one, want b")
	}
	if st := g.Stats(); st.Waiting != 5 || st.Busy != 2 {
		t.Fatalf("got %+v, want 5 of a waiting and 2 slots taken", st)
	}
}
