package protocol

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/certs"
)

func TestParseWait(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		n    int
		ok   bool
	}{
		{"TENDRIL-WAIT 30000\n", 30 * time.Second, 19, true},
		{"TENDRIL-WAIT 1\n\x16\x03", time.Millisecond, 15, true},
		{"TENDRIL-WAIT 999999999\n", MaxWait, 23, true},
		{"TENDRIL-WAIT 30000", 0, 0, false},
		{"TENDRIL-WAIT \n", 0, 0, false},
		{"TENDRIL-WAIT 1x\n", 0, 0, false},
		{"TENDRIL-BUSY 1\n", 0, 0, false},
		{"", 0, 0, false},
	} {
		got, n, err := ParseWait([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want || n != tc.n {
			t.Errorf("ParseWait(%q): got %s, %d, %v; want %s, %d, ok %v", tc.in, got, n, err, tc.want, tc.n, tc.ok)
		}
	}
}

func FuzzParseWait(f *testing.F) {
	f.Add([]byte("TENDRIL-WAIT 30000\n"))
	f.Add([]byte("TENDRIL-WAIT 1\nTENDRIL-WAIT 2\n"))
	f.Add([]byte("TENDRIL-BUSY 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, n, err := ParseWait(b)
		if err != nil {
			return
		}
		if d < 0 || d > MaxWait {
			t.Fatalf("ParseWait(%q) = %s, out of [0, %s]", b, d, MaxWait)
		}
		if n < len(waitPrefix)+2 || n > maxWaitLine || b[n-1] != '\n' {
			t.Fatalf("ParseWait(%q): line length %d, want a whole line of at most %d", b, n, maxWaitLine)
		}
	})
}

// clientHello returns the first TLS record a client with cfg sends.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tls.Client(c, cfg).Handshake()
		c.Close()
	}()
	head := make([]byte, 5)
	if _, err := io.ReadFull(s, head); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(head[3])<<8|int(head[4]))
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatal(err)
	}
	return append(head, body...)
}

func TestHelloOffersWait(t *testing.T) {
	p := newPair(t)
	agent := ClientTLS{Identity: p.client, Pins: certs.NewPins(p.server.Thumbprint)}.Config()
	old := agent.Clone()
	old.NextProtos = []string{ALPN} // an agent of an earlier release
	none := agent.Clone()
	none.NextProtos = nil
	hello := clientHello(t, agent)
	for _, tc := range []struct {
		name   string
		record []byte
		want   bool
	}{
		{"agent", hello, true},
		{"earlier agent", clientHello(t, old), false},
		{"no application protocols", clientHello(t, none), false},
		{"cut short", hello[:len(hello)/2], false},
		{"header only", hello[:5], false},
		{"not a handshake record", append([]byte{23}, hello[1:]...), false},
		{"plain text", []byte("GET / HTTP/1.1\r\n\r\n"), false},
		{"empty", nil, false},
	} {
		if got := HelloOffersWait(tc.record); got != tc.want {
			t.Errorf("%s: HelloOffersWait: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzHelloOffersWait(f *testing.F) {
	p := newPair(f)
	f.Add(clientHello(f, ClientTLS{Identity: p.client, Pins: certs.NewPins(p.server.Thumbprint)}.Config()))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		HelloOffersWait(b) // must not panic or read past b
	})
}

// TestWaitLinesThenHandshake: a coordinator that reads the agent's
// ClientHello (ReadHello), says how long it may keep it waiting, in one
// line or in pieces, and then completes the handshake; the agent learns
// each wait and the handshake sees none of the lines.
func TestWaitLinesThenHandshake(t *testing.T) {
	p := newPair(t)
	for _, tc := range []struct {
		name   string
		lines  [][]byte // each written on its own
		waits  []time.Duration
		busy   time.Duration // then the busy answer instead of TLS
		offers bool          // the client offers WaitALPN
	}{
		{name: "no line", offers: true},
		{name: "one line", lines: [][]byte{AppendWait(nil, 30*time.Second)}, waits: []time.Duration{30 * time.Second}, offers: true},
		{name: "two lines in pieces", lines: [][]byte{[]byte("TENDRIL-WA"), []byte("IT 20\nTENDRIL-WAIT 4"), []byte("0\n")},
			waits: []time.Duration{20 * time.Millisecond, 40 * time.Millisecond}, offers: true},
		{name: "line then busy", lines: [][]byte{AppendWait(nil, time.Second)}, waits: []time.Duration{time.Second}, busy: 3 * time.Second, offers: true},
		{name: "earlier agent", offers: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			sc := ServerTLS{Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &p.server.Certificate, nil }}.Config()
			offered := make(chan bool, 1)
			go func() {
				raw, err := ln.Accept()
				if err != nil {
					return
				}
				defer raw.Close()
				peeked, err := Peek(raw, 5*time.Second)
				if err != nil {
					offered <- false
					return
				}
				conn, ok := ReadHello(peeked, 5*time.Second)
				offered <- ok
				for _, l := range tc.lines {
					raw.Write(l)
					time.Sleep(time.Millisecond) // separate writes, so separate reads
				}
				if tc.busy > 0 {
					WriteBusy(raw, tc.busy, time.Second)
					return
				}
				srv := tls.Server(conn, sc)
				srv.SetDeadline(time.Now().Add(10 * time.Second))
				if srv.Handshake() == nil {
					io.Copy(srv, srv) // echo
				}
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			cc := ClientTLS{Identity: p.client, Pins: certs.NewPins(p.server.Thumbprint)}.Config()
			if !tc.offers {
				cc.NextProtos = []string{ALPN}
			}
			watch := WatchBusy(raw)
			var waits []time.Duration
			watch.OnWait = func(d time.Duration) { waits = append(waits, d) }
			conn := tls.Client(watch, cc)
			err = watch.Busy(conn.Handshake())
			if got := <-offered; got != tc.offers {
				t.Errorf("the coordinator read WaitALPN offered: got %v, want %v", got, tc.offers)
			}
			if !slices.Equal(waits, tc.waits) {
				t.Errorf("waits: got %v, want %v", waits, tc.waits)
			}
			if tc.busy > 0 {
				if got, ok := BusyAfter(err); !ok || got != tc.busy {
					t.Fatalf("got %v, want busy %s", err, tc.busy)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if got := conn.ConnectionState().NegotiatedProtocol; got != ALPN {
				t.Errorf("negotiated protocol: got %q, want %q", got, ALPN)
			}
			msg := []byte("after the handshake")
			conn.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
			}
		})
	}
}
