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
	return newStream(ws), nil
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
	return newStream(ws), nil
}

// stream is a WebSocket as the byte stream a TLS session runs over. Its
// frames carry TLS records, whose own limits apply, so it reads without a
// limit. Its context is the stream's whole life, not the dial's. A
// deadline that passes during a read or write ends the WebSocket, which
// is all the session's deadlines (the handshake's) are for.
type stream struct {
	net.Conn
	ws *websocket.Conn
}

func newStream(ws *websocket.Conn) net.Conn {
	return stream{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary), ws: ws}
}

// Close ends the WebSocket at once. The WebSocket close handshake would
// wait up to five seconds for a peer that may never answer, holding the
// coordinator's handshake slot; the TLS session inside has its own end.
func (s stream) Close() error {
	err := s.ws.CloseNow()
	s.Conn.Close() // stops the stream's timers; the WebSocket is closed already
	return err
}
