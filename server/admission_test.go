package server

import (
	"context"
	"testing"
	"time"
)

func TestAdmission(t *testing.T) {
	a := newAdmission(1, 1, time.Hour)
	if !a.tryNow() {
		t.Fatal("first connection: no free slot, want one")
	}
	if a.tryNow() {
		t.Fatal("second connection: got a slot while the only one is taken")
	}
	// One may wait; the queue is then full and the next is shed.
	if !a.enqueue() {
		t.Fatal("enqueue: queue full, want a place")
	}
	if a.enqueue() {
		t.Fatal("enqueue beyond the queue: got a place, want it shed")
	}
	got := make(chan bool)
	go func() { got <- a.await(context.Background()) }()
	a.release() // the handshake in progress ends: the waiting one gets its slot
	if !<-got {
		t.Fatal("await: got no slot after one was released")
	}
	// Its queue place was given back.
	if !a.enqueue() {
		t.Fatal("enqueue after the wait: queue still full")
	}
	// A wait that runs out sheds, and also gives its place back.
	short := newAdmission(1, 1, time.Millisecond)
	short.tryNow()
	short.enqueue()
	if short.await(context.Background()) {
		t.Fatal("await with every slot held: got one, want the wait to run out")
	}
	if !short.enqueue() {
		t.Fatal("queue place not given back after a wait ran out")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if short.await(ctx) {
		t.Fatal("await after shutdown: got a slot")
	}
}
