package protocol

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"
)

// WebSocketPath is where a coordinator's HTTP listener takes agent
// sessions carried in a WebSocket, for sites that let only HTTPS out: the
// agent's mutually authenticated TLS session runs inside the WebSocket,
// so a reverse proxy or load balancer in front terminates nothing of it.
const WebSocketPath = "/agent"

// IsWebSocket reports whether a coordinator address is a WebSocket URL
// (ws:// or wss://) rather than host:port.
func IsWebSocket(addr string) bool {
	return strings.HasPrefix(addr, "wss://") || strings.HasPrefix(addr, "ws://")
}

// ValidateServer checks a coordinator address as an agent takes it:
// host:port for a direct session, or a ws:// or wss:// URL for one carried
// in a WebSocket (through a reverse proxy on port 443, say).
func ValidateServer(s string) error {
	if !IsWebSocket(s) {
		return ValidateAddress(s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("address %q: %v", s, err)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("address %q: no host", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("address %q: a WebSocket address has no user, query or fragment", s)
	}
	return nil
}

// DialWebSocket opens a WebSocket to the URL addr and returns it as a
// byte stream for the agent's TLS session. client makes the HTTP request
// (its transport may go through a proxy); a wss:// URL's own TLS is only
// the carrier through web infrastructure, so its certificate is not
// checked: the agent trusts the coordinator by the thumbprint it pinned,
// which the session inside proves.
func DialWebSocket(ctx context.Context, addr string, client *http.Client) (net.Conn, error) {
	if client == nil {
		client = &http.Client{}
	}
	c := *client
	tr, _ := c.Transport.(*http.Transport)
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport)
	}
	tr = tr.Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // see above: the carrier, not the trust
	c.Transport = tr
	ws, _, err := websocket.Dial(ctx, addr, &websocket.DialOptions{HTTPClient: &c, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, fmt.Errorf("open WebSocket %s: %w", addr, err)
	}
	ws.SetReadLimit(-1) // frames carry TLS records, whose own limits apply
	// NetConn's context bounds the stream's whole life, not the dial.
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

// AcceptWebSocket upgrades an agent's request to a WebSocket and returns
// it as a byte stream for the coordinator's TLS handshake. The request
// carries no credential: the session inside does.
func AcceptWebSocket(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Agents are no browsers: there is no origin to check, and no
		// cookie or ambient credential a cross-site page could use.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}
