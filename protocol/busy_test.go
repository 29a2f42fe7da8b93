package protocol

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestParseBusy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"TENDRIL-BUSY 1234\n", 1234 * time.Millisecond, true},
		{"TENDRIL-BUSY 0\n", 0, true},
		{"TENDRIL-BUSY 999999999\n", MaxBusyRetry, true},
		{"TENDRIL-BUSY 1234\nmore", 1234 * time.Millisecond, true},
		{"TENDRIL-BUSY 1234", 0, false},
		{"TENDRIL-BUSY \n", 0, false},
		{"TENDRIL-BUSY 1234567890\n", 0, false},
		{"TENDRIL-BUSY -1\n", 0, false},
		{"TENDRIL-BUSY 12a\n", 0, false},
		{"TENDRIL-BUSY  12\n", 0, false},
		{"TENDRIL-BUSX 12\n", 0, false},
		{"\x16\x03\x01\x00\x05", 0, false},
		{"", 0, false},
	} {
		got, err := ParseBusy([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBusy(%q): got %s, %v; want %s, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestAppendBusy(t *testing.T) {
	for _, tc := range []struct {
		d, want time.Duration
	}{
		{1234 * time.Millisecond, 1234 * time.Millisecond},
		{0, time.Millisecond},
		{-time.Second, time.Millisecond},
		{time.Hour, MaxBusyRetry},
		{1500 * time.Microsecond, time.Millisecond},
	} {
		b := AppendBusy(nil, tc.d)
		if len(b) > maxBusyLine {
			t.Errorf("AppendBusy(%s): %d bytes, want at most %d", tc.d, len(b), maxBusyLine)
		}
		got, err := ParseBusy(b)
		if err != nil || got != tc.want {
			t.Errorf("ParseBusy(AppendBusy(%s)) = %s, %v; want %s", tc.d, got, err, tc.want)
		}
	}
}

func FuzzParseBusy(f *testing.F) {
	f.Add([]byte("TENDRIL-BUSY 1234\n"))
	f.Add([]byte("TENDRIL-BUSY 999999999\n"))
	f.Add([]byte("TENDRIL-BUSY \n"))
	f.Add([]byte("\x16\x03\x01\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseBusy(b)
		if err != nil {
			return
		}
		if d < 0 || d > MaxBusyRetry {
			t.Fatalf("ParseBusy(%q) = %s, out of [0, %s]", b, d, MaxBusyRetry)
		}
		// What parses is a line of the prefix and digits, written back
		// the same (up to the bounds AppendBusy applies).
		line := b[:bytes.IndexByte(b, '\n')+1]
		if d >= time.Millisecond && d < MaxBusyRetry {
			if again := AppendBusy(nil, d); !bytes.Equal(bytes.TrimLeft(again[len(busyPrefix):], "0"), bytes.TrimLeft(line[len(busyPrefix):], "0")) {
				t.Fatalf("ParseBusy(%q) = %s, written back as %q", b, d, again)
			}
		}
	})
}

// TestBusyHandshake runs a TLS client handshake against a peer that
// answers with the busy answer, or with other plain text, and checks what
// the client learns.
func TestBusyHandshake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer []byte
		want   time.Duration // 0: not a busy answer
	}{
		{"busy", AppendBusy(nil, 2500*time.Millisecond), 2500 * time.Millisecond},
		{"busy in pieces", AppendBusy(nil, 7*time.Second), 7 * time.Second},
		{"http", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), 0},
		{"cut short", []byte("TENDRIL-BUSY 12"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := dialAnswering(t, func(server net.Conn) {
				if tc.name == "busy in pieces" {
					server.Write(tc.answer[:3])
					server.Write(tc.answer[3:9])
					server.Write(tc.answer[9:])
				} else {
					server.Write(tc.answer)
				}
			})
			bc := WatchBusy(client)
			conn := tls.Client(bc, &tls.Config{InsecureSkipVerify: true})
			err := bc.Busy(conn.Handshake())
			if err == nil {
				t.Fatal("handshake succeeded against plain text")
			}
			got, ok := BusyAfter(err)
			if tc.want == 0 {
				if ok {
					t.Fatalf("got busy %s from %q, want a plain handshake failure", got, tc.answer)
				}
				return
			}
			if !ok || got != tc.want {
				t.Fatalf("got %s (busy %v) from %v, want busy %s", got, ok, err, tc.want)
			}
			var be *BusyError
			if !errors.As(err, &be) {
				t.Fatalf("got %T, want *BusyError", err)
			}
		})
	}
}

// TestBusyAnswerToOldClient: a TLS client that does not watch for the
// busy answer (an agent of an earlier release) sees a handshake that
// failed on a record that is not TLS, and backs off as it always did.
func TestBusyAnswerToOldClient(t *testing.T) {
	client := dialAnswering(t, func(server net.Conn) { server.Write(AppendBusy(nil, time.Second)) })
	err := tls.Client(client, &tls.Config{InsecureSkipVerify: true}).Handshake()
	if _, ok := errors.AsType[tls.RecordHeaderError](err); !ok {
		t.Fatalf("got %v, want a tls.RecordHeaderError", err)
	}
	if _, ok := BusyAfter(err); ok {
		t.Fatal("an unwatched handshake's error reads as busy, want a plain failure")
	}
}

// dialAnswering dials a loopback server that reads the ClientHello's
// record header at least, as the coordinator's first-byte peek does, then
// answers with answer, and returns the client's connection (closed with
// the test).
func dialAnswering(t *testing.T, answer func(server net.Conn)) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		server, err := ln.Accept()
		if err != nil {
			return
		}
		defer server.Close()
		io.ReadFull(server, make([]byte, 5))
		answer(server)
		io.Copy(io.Discard, server)
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.SetDeadline(time.Now().Add(10 * time.Second))
	return client
}
