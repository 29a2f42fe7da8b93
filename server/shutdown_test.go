package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
)

// silentAgent enrolls an agent that says Hello and then never reads its
// session: a goodbye to it can only time out.
func silentAgent(t *testing.T, ts *testServer, name string) *peer {
	t.Helper()
	return enrolledPeer(t, ts, name, false)
}

// TestShutdownGraceful: with time enough, Shutdown tells agents to come
// back later, Run returns nil and removes the run file.
func TestShutdownGraceful(t *testing.T) {
	ts := startServer(t, nil)
	p := silentAgent(t, ts, "web-1")
	goAway := make(chan protocol.GoAway, 1)
	go func() {
		for {
			st, err := p.sess.AcceptStream()
			if err != nil {
				return
			}
			f, err := protocol.ReadFrame(st, 0)
			if err != nil || f.Type != protocol.TypeGoAway {
				st.Close() // a health check: not what this test waits for
				continue
			}
			var g protocol.GoAway
			f.Decode(&g)
			protocol.WriteFrame(st, protocol.TypeAck, struct{}{})
			goAway <- g
			return
		}
	}()
	eventually(t, "run file written", func() bool {
		_, err := os.Stat(filepath.Join(ts.dir, api.RunFile))
		return err == nil
	})
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: got %v, want nil", err)
	}
	select {
	case g := <-goAway:
		if !g.Reconnect {
			t.Errorf("got a goodbye without reconnect: %+v", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent was not told to come back later")
	}
	if err := <-ts.done; err != nil {
		t.Fatalf("Run after Shutdown: got %v, want nil", err)
	}
	ts.done = nil
	if _, err := os.Stat(filepath.Join(ts.dir, api.RunFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run file after Shutdown: got %v, want it removed", err)
	}
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: got %v, want nil", err)
	}
}

// TestShutdownHonorsDeadline: an agent that never answers its goodbye
// cannot hold Shutdown past the caller's deadline; Close then releases
// what is left, and both stay safe to call again.
func TestShutdownHonorsDeadline(t *testing.T) {
	ts := startServer(t, nil)
	p := silentAgent(t, ts, "mute")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no time at all
	if err := ts.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an ended context: got %v, want %v", err, context.Canceled)
	}
	if err := <-ts.done; err != nil {
		t.Fatalf("Run after Shutdown: got %v, want nil", err)
	}
	ts.done = nil
	select {
	case <-p.sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's session is still open after Shutdown ran out of time")
	}
	if err := ts.Close(); err != nil {
		t.Fatalf("Close: got %v", err)
	}
	if err := ts.Close(); err != nil {
		t.Fatalf("second Close: got %v", err)
	}
	if _, err := ts.store.ListAgents(context.Background()); err == nil {
		t.Error("the store is still open after Close")
	}
}
