package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/secret"
	"github.com/tendrildeploy/tendril/server/store"
)

// stillServing checks that the bystander agent is connected and answers a
// health check: whatever a test threw at the coordinator, everyone else is
// still served.
func stillServing(t *testing.T, ts *testServer, bystander string) {
	t.Helper()
	if n := ts.checkAllHealth(); n == 0 {
		t.Fatal("no agents connected after bad input, want the bystander")
	}
	v := ts.agentView(t, bystander)
	if !v.Connected || v.Health != api.HealthHealthy {
		t.Fatalf("bystander %s: got connected=%v health=%s (%s), want connected and healthy", bystander, v.Connected, v.Health, v.HealthDetail)
	}
}

func TestRegisterBadTokens(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	ctx := context.Background()

	expired := secret.New("tdt_")
	now := time.Now().UTC()
	if err := ts.store.CreateToken(ctx, store.Token{ID: "x", Hash: secret.Hash(expired), Environment: "Test", CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	used := ts.token(t, "Test")
	first, _ := dialPeer(t, ts, newIdentity(t))
	if _, err := first.register(used, "first", false); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, token, want string
	}{
		{"wrong", "tdt_not-a-real-token", "not valid"},
		{"empty", "", "not valid"},
		{"expired", expired, "expired"},
		{"already used", used, "already been used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := dialPeer(t, ts, newIdentity(t))
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.register(tt.token, "agent-"+strings.ReplaceAll(tt.name, " ", "-"), false)
			if !protocol.IsCode(err, protocol.CodeUnauthorized) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an unauthorized error saying %q", err, tt.want)
			}
		})
	}
	agents, _ := ts.Agents(ctx)
	if len(agents) != 2 {
		t.Errorf("agents: got %d, want 2 (bystander and first): nothing else may be created", len(agents))
	}
	stillServing(t, ts, "bystander")
}

func TestRegisterNames(t *testing.T) {
	ts := startServer(t, nil)
	a := newIdentity(t)
	pa, _ := dialPeer(t, ts, a)
	if _, err := pa.register(ts.token(t, "Test"), "web-1", false); err != nil {
		t.Fatal(err)
	}
	// A second machine asks for the same name.
	b := newIdentity(t)
	pb, _ := dialPeer(t, ts, b)
	_, err := pb.register(ts.token(t, "Test"), "web-1", false)
	if !protocol.IsCode(err, protocol.CodeConflict) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("same name: got %v, want a conflict that mentions --force", err)
	}
	// An invalid name never reaches the store.
	if _, err := pb.register(ts.token(t, "Test"), "../etc", false); !protocol.IsCode(err, protocol.CodeBadRequest) {
		t.Fatalf("bad name: got %v, want bad_request", err)
	}
	// With --force the new machine takes the name; the old certificate is
	// revoked and the old agent, if connected, is dropped.
	pa2, err := dialPeer(t, ts, a)
	if err != nil {
		t.Fatal(err)
	}
	pa2.serveHealth()
	if _, err := pa2.hello(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "web-1 connected", func() bool { return ts.agentView(t, "web-1").Connected })
	if _, err := pb.register(ts.token(t, "Test"), "web-1", true); err != nil {
		t.Fatalf("force: %v", err)
	}
	select {
	case <-pa2.sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("replaced agent's session is still open")
	}
	v := ts.agentView(t, "web-1")
	if v.Thumbprint != b.Thumbprint {
		t.Errorf("thumbprint: got %s, want the new machine's %s", v.Thumbprint, b.Thumbprint)
	}
	if p, err := dialPeer(t, ts, a); err == nil {
		if _, err := p.hello(); err == nil {
			t.Fatal("replaced certificate still accepted")
		}
	}
	// Re-registering the same certificate needs --force too.
	pb2, _ := dialPeer(t, ts, b)
	if _, err := pb2.register(ts.token(t, "Test"), "web-1-again", false); !protocol.IsCode(err, protocol.CodeConflict) {
		t.Fatalf("re-register without force: got %v, want conflict", err)
	}
	pb3, _ := dialPeer(t, ts, b)
	r, err := pb3.register(ts.token(t, "Test"), "web-1-again", true)
	if err != nil || r.Name != "web-1-again" {
		t.Fatalf("re-register with force: got %+v, %v; want name web-1-again", r, err)
	}
}

func TestUnregisteredCertificateMayOnlyRegister(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	for _, typ := range []string{protocol.TypeHello, protocol.TypeHealth, protocol.TypeRotateCertificate, "made_up"} {
		t.Run(typ, func(t *testing.T) {
			p, err := dialPeer(t, ts, newIdentity(t))
			if err != nil {
				t.Fatal(err)
			}
			err = p.call(typ, map[string]any{}, protocol.TypeAck, nil)
			if !protocol.IsCode(err, protocol.CodeUnauthorized) {
				t.Fatalf("got %v, want unauthorized", err)
			}
			select {
			case <-p.sess.CloseChan():
			case <-time.After(10 * time.Second):
				t.Fatal("connection still open after an unauthorized call")
			}
		})
	}
	stillServing(t, ts, "bystander")
}

func TestDeletedAgentIsRefused(t *testing.T) {
	ts := startServer(t, nil)
	victim := deletedBeside(t, ts, "bystander", "victim")
	p, err := dialPeer(t, ts, victim.id)
	if err == nil {
		_, err = p.hello()
	}
	if err == nil {
		t.Fatal("deleted agent's certificate was accepted")
	}
	if _, err := ts.Agent(context.Background(), "victim"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted agent still listed: %v", err)
	}
	if err := ts.DeleteAgent(context.Background(), "victim"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: got %v, want ErrNotFound", err)
	}
	stillServing(t, ts, "bystander")
}

func TestClientWithoutCertificate(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	conn, err := tls.Dial("tcp", ts.AgentAddr(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || isTimeout(err) {
		t.Fatalf("got %v, want the handshake refused", err)
	}
	stillServing(t, ts, "bystander")
}

// rawStream opens a stream on an enrolled agent's session and writes raw
// bytes to it, returning the coordinator's reply frame, if any.
func rawStream(t *testing.T, p *peer, b []byte) (protocol.Frame, error) {
	t.Helper()
	st, err := p.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write(b); err != nil {
		return protocol.Frame{}, err
	}
	st.Close() // a yamux close is a half-close: the reply can still be read
	return protocol.ReadFrame(st, 0)
}

func frameBytes(payload string) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
}

func TestBadFramesOnAgentSession(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	p := enrolled(t, ts, "noisy")
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, protocol.MaxFrameSize+1)
	tests := []struct {
		name     string
		in       []byte
		wantCode string
	}{
		{"over maximum size", huge, protocol.CodeBadRequest},
		{"truncated frame", frameBytes(`{"type":"rotate_certificate"}`)[:12], protocol.CodeBadRequest},
		{"garbage JSON", frameBytes(`{"type":`), protocol.CodeBadRequest},
		{"unknown type", frameBytes(`{"type":"format_disk"}`), protocol.CodeUnknownType},
		{"wrong body type", frameBytes(`{"type":"rotate_certificate","body":{"certificate":12}}`), protocol.CodeBadRequest},
		{"bad certificate", frameBytes(`{"type":"rotate_certificate","body":{"certificate":"AAAA"}}`), protocol.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := rawStream(t, p, tt.in)
			if err != nil {
				t.Fatalf("got no reply (%v), want an error frame", err)
			}
			if err := protocol.DecodeReply(f, protocol.TypeAck, nil); !protocol.IsCode(err, tt.wantCode) {
				t.Fatalf("got %v, want code %s", err, tt.wantCode)
			}
		})
	}
	// The noisy agent's session survives its own bad requests.
	if p.sess.IsClosed() {
		t.Error("session closed after bad frames, want it kept")
	}
	stillServing(t, ts, "bystander")
	stillServing(t, ts, "noisy")
}

func TestFirstMessageMustBeHello(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	id := newIdentity(t)
	p, _ := dialPeer(t, ts, id)
	if _, err := p.register(ts.token(t, "Test"), "odd", false); err != nil {
		t.Fatal(err)
	}
	p, _ = dialPeer(t, ts, id)
	err := p.call(protocol.TypeHealth, protocol.Health{}, protocol.TypeWelcome, nil)
	if !protocol.IsCode(err, protocol.CodeBadRequest) {
		t.Fatalf("got %v, want bad_request", err)
	}
	p, _ = dialPeer(t, ts, id)
	err = p.call(protocol.TypeHello, protocol.Hello{ProtocolMin: 9, ProtocolMax: 9}, protocol.TypeWelcome, nil)
	if !protocol.IsCode(err, protocol.CodeIncompatible) {
		t.Fatalf("newer protocol: got %v, want incompatible", err)
	}
	stillServing(t, ts, "bystander")
}

func TestSilentPeerIsDropped(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HandshakeTimeout = time.Second })
	enrolled(t, ts, "bystander")
	// Connects and sends nothing: dropped at the handshake deadline.
	conn, err := net.Dial("tcp", ts.AgentAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent TCP peer: got %v, want the connection closed by the coordinator", err)
	}
	// Completes TLS but never says hello: dropped too.
	id := newIdentity(t)
	p, _ := dialPeer(t, ts, id)
	if _, err := p.register(ts.token(t, "Test"), "mute", false); err != nil {
		t.Fatal(err)
	}
	p, err = dialPeer(t, ts, id)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.sess.CloseChan():
	case <-time.After(20 * time.Second):
		t.Fatal("session without hello is still open")
	}
	stillServing(t, ts, "bystander")
}

func TestPlainHTTPAndRandomBytesOnAgentPort(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	junk := bytes.Repeat([]byte{0x17, 0x03, 0x03, 0xff, 0xff, 0x00}, 2000)
	for _, in := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), junk} {
		conn, err := net.Dial("tcp", ts.AgentAddr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(in)
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, conn) // until the coordinator closes it
		conn.Close()
	}
	stillServing(t, ts, "bystander")
}

func TestThousandStreamsFromOnePeer(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	p := enrolled(t, ts, "flood")
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened := 0
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := p.sess.OpenStream()
			if err != nil {
				return
			}
			mu.Lock()
			opened++
			mu.Unlock()
			// Hold the stream open, sending nothing, until the coordinator
			// gives up on it or resets it.
			st.SetDeadline(time.Now().Add(time.Minute))
			io.Copy(io.Discard, st)
			st.Close()
		}()
	}
	// While the flood is held open, everyone else is still served.
	stillServing(t, ts, "bystander")
	p.sess.Close()
	wg.Wait()
	if opened == 0 {
		t.Fatal("opened no streams")
	}
	stillServing(t, ts, "bystander")
}

// TestStreamsHeldPerPeer opens more streams from one agent than the
// coordinator holds, sending nothing on any: it serves maxStreamsPerAgent
// at once, takes one more that waits for a slot, queues
// maxStreamsPerAgent more in yamux's backlog, and resets the rest.
func TestStreamsHeldPerPeer(t *testing.T) {
	ts := startServer(t, nil)
	enrolled(t, ts, "bystander")
	p := enrolled(t, ts, "many")
	const opened = 50
	held := maxStreamsPerAgent + 1 + maxStreamsPerAgent
	var wg sync.WaitGroup
	var mu sync.Mutex
	reset := 0
	for i := range opened {
		if i == maxStreamsPerAgent+1 {
			// The first ones are being served (or wait for a slot)
			// before the rest come: then the backlog alone decides.
			time.Sleep(time.Second)
		}
		st, err := p.sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			// A reset comes at once; a held stream hears nothing until the
			// coordinator's request timeout.
			st.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := st.Read(make([]byte, 1))
			if errors.Is(err, yamux.ErrConnectionReset) {
				mu.Lock()
				reset++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if want := opened - held; reset != want {
		t.Fatalf("got %d of %d streams reset, want %d (%d held)", reset, opened, want, held)
	}
	p.sess.Close()
	stillServing(t, ts, "bystander")
}
