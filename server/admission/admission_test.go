package admission

import (
	"context"
	"testing"
	"time"
)

func TestAdmission(t *testing.T) {
	a := New(1, 1, time.Hour)
	if !a.TryNow() {
		t.Fatal("first connection: no free slot, want one")
	}
	if a.TryNow() {
		t.Fatal("second connection: got a slot while the only one is taken")
	}
	// One may wait; the queue is then full and the next is shed.
	if !a.Enqueue() {
		t.Fatal("enqueue: queue full, want a place")
	}
	if a.Enqueue() {
		t.Fatal("enqueue beyond the queue: got a place, want it shed")
	}
	got := make(chan bool)
	go func() { got <- a.Await(context.Background()) }()
	a.Release() // the handshake in progress ends: the waiting one gets its slot
	if !<-got {
		t.Fatal("await: got no slot after one was released")
	}
	// Its queue place was given back.
	if !a.Enqueue() {
		t.Fatal("enqueue after the wait: queue still full")
	}
	// A wait that runs out sheds, and also gives its place back.
	short := New(1, 1, time.Millisecond)
	short.TryNow()
	short.Enqueue()
	if short.Await(context.Background()) {
		t.Fatal("await with every slot held: got one, want the wait to run out")
	}
	if !short.Enqueue() {
		t.Fatal("queue place not given back after a wait ran out")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if short.Await(ctx) {
		t.Fatal("await after shutdown: got a slot")
	}
}
