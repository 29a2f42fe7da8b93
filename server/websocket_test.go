package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/proxytest"
	"github.com/tendrildeploy/tendril/protocol"
)

// TestAgentThroughNginxWebSocket: an agent allowed out only on HTTPS
// reaches the coordinator as a WebSocket through nginx terminating TLS
// (a self-signed certificate, as a private load balancer has), enrolls,
// gets Calamari and runs a task; its mutually authenticated session runs
// inside, pinned as always.
func TestAgentThroughNginxWebSocket(t *testing.T) {
	ts := startServer(t, nil)
	lb := proxytest.Nginx(t, ts.HTTPAddr(), protocol.WebSocketPath)
	addr := "wss://" + lb.Addr + protocol.WebSocketPath
	home := registerAgent(t, ts, addr, "web-443", nil)
	a := startAgent(t, home, nil)
	v := ts.waitConnected(t, "web-443")
	if v.TLSVersion != "1.3" {
		t.Errorf("inner session: got TLS %q, want 1.3", v.TLSVersion)
	}
	ts.upload(t, packBundle(t, "1.0.0", 0))
	task, _ := ts.runTaskOn(t, "web-443", "run-script", "--inline", "echo over 443")
	if task.State != api.TaskSucceeded {
		t.Fatalf("task: got %s (%s), want succeeded", task.State, task.Error)
	}
	a.stop()
	eventually(t, "nginx to log the registration's and the session's upgrades", func() bool { return lb.Upgrades() >= 2 })
}

// TestWebSocketBadInput: a WebSocket that carries no TLS, or TLS without
// an agent certificate, is refused in the handshake like a TCP connection
// would be, and an agent already connected is not disturbed.
func TestWebSocketBadInput(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HandshakeTimeout = time.Second })
	bystander := registerAgent(t, ts, ts.AgentAddr(), "bystander", nil)
	startAgent(t, bystander, nil)
	ts.waitConnected(t, "bystander")
	url := "ws://" + ts.HTTPAddr() + protocol.WebSocketPath

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name string
		talk func(c net.Conn) error
	}{
		{"garbage instead of TLS", func(c net.Conn) error {
			c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			_, err := c.Read(make([]byte, 1))
			return err
		}},
		{"TLS without a client certificate", func(c net.Conn) error {
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
			if err := tc.HandshakeContext(ctx); err != nil {
				return err
			}
			_, err := tc.Read(make([]byte, 1)) // TLS 1.3 reports the refusal on the first read
			return err
		}},
		{"silence", func(c net.Conn) error {
			_, err := c.Read(make([]byte, 1))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := protocol.DialWebSocket(ctx, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The coordinator must end the stream well before this
			// test's own deadline: past its handshake timeout at most.
			start := time.Now()
			c.SetDeadline(start.Add(ts.cfg.HandshakeTimeout + 10*time.Second))
			err = tt.talk(c)
			if err == nil {
				t.Fatal("the coordinator answered, want the stream refused and closed")
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("the coordinator held the stream open (%v), want it closed", err)
			}
			if took := time.Since(start); took > ts.cfg.HandshakeTimeout+5*time.Second {
				t.Fatalf("the stream was closed after %s, want within the handshake timeout (%s)", took, ts.cfg.HandshakeTimeout)
			}
		})
	}
	if !ts.agentView(t, "bystander").Connected {
		t.Fatal("the bystander agent lost its session")
	}
	// A plain request for the WebSocket path is refused, not served.
	if resp, _ := ts.api(t, "GET", protocol.WebSocketPath, "-", nil); resp.StatusCode == 200 || resp.StatusCode == 101 {
		t.Fatalf("plain GET %s: got %d, want a refusal", protocol.WebSocketPath, resp.StatusCode)
	}
}
