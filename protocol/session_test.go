package protocol

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/goleak"

	"github.com/tendrildeploy/tendril/certs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type tlsPair struct {
	server, client *certs.Identity
}

func newPair(t testing.TB) tlsPair {
	t.Helper()
	s, err := certs.NewIdentity("coordinator")
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.NewIdentity("agent")
	if err != nil {
		t.Fatal(err)
	}
	return tlsPair{s, c}
}

// sessionPair runs a TLS handshake over loopback with the pair's
// identities and starts a yamux session on each side with the options
// given (Server is set on the server's); both close at the test's end.
func sessionPair(t *testing.T, p tlsPair, so, co SessionOptions) (srv, cli *yamux.Session) {
	t.Helper()
	sc := ServerTLS{Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &p.server.Certificate, nil }}.Config()
	cc := ClientTLS{Identity: p.client, Pins: certs.NewPins(p.server.Thumbprint)}.Config()
	s, c, serr, cerr := handshake(t, sc, cc)
	if serr != nil || cerr != nil {
		t.Fatal(serr, cerr)
	}
	s.SetDeadline(time.Time{})
	c.SetDeadline(time.Time{})
	so.Server = true
	srv, err := NewSession(s, so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cli, err = NewSession(c, co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return srv, cli
}

// handshake runs one TLS handshake over loopback and returns both sides'
// results.
func handshake(t testing.TB, sc, cc *tls.Config) (server, client *tls.Conn, serr, cerr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		raw, err := ln.Accept()
		if err != nil {
			serr = err
			return
		}
		server = tls.Server(raw, sc)
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		serr = server.Handshake()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	client = tls.Client(raw, cc)
	cerr = client.Handshake()
	if cerr != nil {
		client.Close() // lets the server side finish with an error
	}
	wg.Wait()
	t.Cleanup(func() {
		client.Close()
		if server != nil {
			server.Close()
		}
	})
	return server, client, serr, cerr
}

func TestTLSPolicy(t *testing.T) {
	p := newPair(t)
	other, _ := certs.NewIdentity("impostor")
	serve := func(min uint16, verify func(string) error) *tls.Config {
		return ServerTLS{
			Certificate:  func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &p.server.Certificate, nil },
			MinVersion:   min,
			VerifyClient: verify,
		}.Config()
	}
	client := func(max uint16, id *certs.Identity, pin string) *tls.Config {
		return ClientTLS{Identity: id, Pins: certs.NewPins(pin), MinVersion: tls.VersionTLS10, MaxVersion: max}.Config()
	}
	revoked := errors.New("certificate revoked")
	tests := []struct {
		name        string
		server      *tls.Config
		client      *tls.Config
		wantOK      bool
		wantVersion uint16
	}{
		{"default is TLS 1.3", serve(0, nil), client(0, p.client, p.server.Thumbprint), true, tls.VersionTLS13},
		{"TLS 1.2 peer", serve(0, nil), client(tls.VersionTLS12, p.client, p.server.Thumbprint), true, tls.VersionTLS12},
		{"TLS 1.0 refused by default", serve(0, nil), client(tls.VersionTLS10, p.client, p.server.Thumbprint), false, 0},
		{"TLS 1.1 refused by default", serve(0, nil), client(tls.VersionTLS11, p.client, p.server.Thumbprint), false, 0},
		{"TLS 1.0 allowed by operator", serve(tls.VersionTLS10, nil), client(tls.VersionTLS10, p.client, p.server.Thumbprint), true, tls.VersionTLS10},
		{"wrong coordinator thumbprint", serve(0, nil), client(0, p.client, other.Thumbprint), false, 0},
		{"revoked client", serve(0, func(string) error { return revoked }), client(0, p.client, p.server.Thumbprint), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, serr, cerr := handshake(t, tt.server, tt.client)
			if tt.wantOK {
				if serr != nil || cerr != nil {
					t.Fatalf("got server %v, client %v; want a handshake", serr, cerr)
				}
				if got := c.ConnectionState().Version; got != tt.wantVersion {
					t.Errorf("version: got %s, want %s", TLSVersionName(got), TLSVersionName(tt.wantVersion))
				}
				got, _ := certs.PeerThumbprint(s.ConnectionState())
				if got != p.client.Thumbprint {
					t.Errorf("server saw client %s, want %s", got, p.client.Thumbprint)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("got a handshake, want it refused")
			}
		})
	}
}

func TestTLSClientWithoutCertificate(t *testing.T) {
	p := newPair(t)
	sc := ServerTLS{Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &p.server.Certificate, nil }}.Config()
	cc := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	_, c, serr, _ := handshake(t, sc, cc)
	if serr == nil {
		t.Fatal("server accepted a client with no certificate")
	}
	// In TLS 1.3 the client learns of the refusal on its first read.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("client read succeeded, want the refusal")
	}
}

func TestServerHintSelectsCertificate(t *testing.T) {
	p := newPair(t)
	prev, _ := certs.NewIdentity("coordinator-old")
	sc := ServerTLS{Certificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if HintMatches(h.ServerName, prev.Thumbprint) {
			return &prev.Certificate, nil
		}
		return &p.server.Certificate, nil
	}}.Config()
	// An agent that only knows the previous certificate asks for it.
	cc := ClientTLS{Identity: p.client, Pins: certs.NewPins(prev.Thumbprint), Hint: prev.Thumbprint}.Config()
	if _, _, serr, cerr := handshake(t, sc, cc); serr != nil || cerr != nil {
		t.Fatalf("hinted handshake: server %v, client %v", serr, cerr)
	}
	// With no hint it gets the current certificate, which it does not pin.
	cc = ClientTLS{Identity: p.client, Pins: certs.NewPins(prev.Thumbprint)}.Config()
	if _, _, _, cerr := handshake(t, sc, cc); !errors.Is(cerr, certs.ErrUntrusted) {
		t.Fatalf("unhinted handshake: got %v, want ErrUntrusted", cerr)
	}
}

func TestCallOverSession(t *testing.T) {
	srv, cli := sessionPair(t, newPair(t), SessionOptions{}, SessionOptions{KeepAlive: time.Second})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a tiny server: echo Hello back as Welcome, refuse others
		defer wg.Done()
		for {
			st, err := srv.AcceptStream()
			if err != nil {
				return
			}
			f, err := ReadFrame(st, 0)
			if err == nil && f.Type == TypeHello {
				var h Hello
				f.Decode(&h)
				WriteFrame(st, TypeWelcome, Welcome{Protocol: h.ProtocolMax, Name: "a"})
			} else if err == nil {
				WriteError(st, CodeUnknownType, "unknown message type "+f.Type)
			}
			st.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var w Welcome
	if err := Call(ctx, cli, TypeHello, Hello{ProtocolMin: 1, ProtocolMax: 1}, TypeWelcome, &w); err != nil {
		t.Fatal(err)
	}
	if w.Protocol != 1 || w.Name != "a" {
		t.Errorf("got %+v, want protocol 1 name a", w)
	}
	if err := Call(ctx, cli, "bogus", nil, TypeAck, nil); !IsCode(err, CodeUnknownType) {
		t.Errorf("unknown type: got %v, want code %s", err, CodeUnknownType)
	}
	cli.Close()
	srv.Close()
	wg.Wait()
}

// TestCallReadsRefusalBeforeClose: a peer that answers with an error and
// closes the session at once. yamux may then report the request's write as
// failed although it went out; the caller must still get the refusal, not
// "session shutdown".
func TestCallReadsRefusalBeforeClose(t *testing.T) {
	p := newPair(t)
	for i := range 100 {
		srv, cli := sessionPair(t, p, SessionOptions{}, SessionOptions{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			st, err := srv.AcceptStream()
			if err != nil {
				return
			}
			ReadFrame(st, 0)
			WriteError(st, CodeUnauthorized, "not registered")
			srv.Close() // at once, as a peer that refuses does
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := Call(ctx, cli, TypeHello, Hello{ProtocolMin: 1, ProtocolMax: 1}, TypeWelcome, nil)
		cancel()
		<-done
		cli.Close()
		if !IsCode(err, CodeUnauthorized) {
			t.Fatalf("attempt %d: got %v, want the refusal", i, err)
		}
	}
}

// TestSessionAcceptBacklog opens streams the other side does not accept:
// those within SessionOptions.AcceptBacklog wait to be accepted, the next
// is reset, as with yamux's default of 64.
func TestSessionAcceptBacklog(t *testing.T) {
	p := newPair(t)
	tests := []struct {
		name      string
		backlog   int
		open      int
		wantReset bool
	}{
		// A yamux client opens at most 64 streams not yet acknowledged,
		// so the default is not exceeded from this side.
		{"default, within", 0, acceptBacklog, false},
		{"smaller, within", 4, 4, false},
		{"smaller, beyond", 4, 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli := sessionPair(t, p, SessionOptions{AcceptBacklog: tt.backlog}, SessionOptions{})
			var last net.Conn
			for range tt.open {
				st, err := cli.OpenStream()
				if err != nil {
					t.Fatal(err)
				}
				last = st
			}
			// The last stream is reset at once if it is beyond the
			// backlog; one within it waits.
			last.SetReadDeadline(time.Now().Add(time.Second))
			_, err := last.Read(make([]byte, 1))
			var ne net.Error
			gotReset := err != nil && !(errors.As(err, &ne) && ne.Timeout())
			if gotReset != tt.wantReset {
				t.Fatalf("last of %d streams: got %v, want reset %t", tt.open, err, tt.wantReset)
			}
			wantAccepted := tt.open
			if tt.wantReset {
				wantAccepted--
			}
			for i := range wantAccepted {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := srv.AcceptStreamWithContext(ctx)
				cancel()
				if err != nil {
					t.Fatalf("accept %d of %d: %v", i+1, wantAccepted, err)
				}
			}
		})
	}
}

// TestStreamWindow: how far a peer may send ahead of a stream's reader
// is yamux's 256 KiB unless SessionOptions.StreamWindow, on the
// receiving side, allows more (the agent's, for pushes).
func TestStreamWindow(t *testing.T) {
	p := newPair(t)
	tests := []struct {
		name   string
		window uint32
		// want is how many bytes the sender gets out after the first
		// while the reader waits: the window, less that byte
		want int
	}{
		{"yamux's", 0, 256<<10 - 1},
		{"below yamux's: yamux's", 64 << 10, 256<<10 - 1},
		{"4 MiB", 4 << 20, 4<<20 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli := sessionPair(t, p, SessionOptions{}, SessionOptions{StreamWindow: tt.window})
			out, err := srv.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			// The first byte opens the stream; once the reader has taken
			// it, the window is what the receiver allows, and the sender
			// writes until it is full.
			if _, err := out.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			in, err := cli.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			if _, err := io.ReadFull(in, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			out.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
			var sent int
			chunk := make([]byte, 16<<10)
			for {
				n, err := out.Write(chunk)
				sent += n
				if err != nil {
					break
				}
			}
			if sent != tt.want {
				t.Errorf("sent %d bytes ahead of the reader, want %d", sent, tt.want)
			}
		})
	}
}
