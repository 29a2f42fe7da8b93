package protocol

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/yamux"
)

// pushPair is a yamux session pair over an in-memory pipe: the sender's
// session, and the receiver's, whose streams serve handles.
func pushPair(t *testing.T, serve func(st *yamux.Stream)) *yamux.Session {
	t.Helper()
	a, b := net.Pipe()
	sender, err := yamux.Client(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	receiver, err := yamux.Server(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		st, err := receiver.AcceptStream()
		if err != nil {
			return
		}
		defer st.Close()
		serve(st)
	}()
	t.Cleanup(func() {
		sender.Close()
		receiver.Close()
		<-done
	})
	return sender
}

func TestPush(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 10_000)
	tests := []struct {
		name     string
		ready    PushReady
		wantDone bool
		wantSent bool
		wantGot  []byte
	}{
		{"from the start", PushReady{}, false, true, payload},
		{"resumed", PushReady{Offset: 70_000}, false, true, payload[70_000:]},
		{"already held", PushReady{Done: true}, true, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			sess := pushPair(t, func(st *yamux.Stream) {
				f, err := ReadFrame(st, 0)
				if err != nil || f.Type != TypeFilePush {
					t.Errorf("header: got %v %v, want %s", f.Type, err, TypeFilePush)
					return
				}
				WriteFrame(st, TypePushReady, tt.ready)
				if tt.ready.Done {
					return
				}
				got, _ = io.ReadAll(io.LimitReader(st, int64(len(payload))-tt.ready.Offset))
				WriteFrame(st, TypeAck, struct{}{})
			})
			sent := false
			done, err := Push(context.Background(), sess, TypeFilePush, FilePush{Name: "f"}, bytes.NewReader(payload), int64(len(payload)),
				TypeAck, nil, func() { sent = true })
			if err != nil || done != tt.wantDone || sent != tt.wantSent {
				t.Fatalf("got done %v sent %v err %v, want done %v sent %v", done, sent, err, tt.wantDone, tt.wantSent)
			}
			if !bytes.Equal(got, tt.wantGot) {
				t.Fatalf("receiver got %d bytes, want %d", len(got), len(tt.wantGot))
			}
		})
	}
}

// TestPushRefusedMidTransfer: a receiver that cannot take the bytes (its
// disk is full) answers with its reason and stops reading; the sender
// stops sending and returns that reason, rather than stalling on a
// stream no one reads until its idle timeout.
func TestPushRefusedMidTransfer(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB, far more than a stream's window
	sess := pushPair(t, func(st *yamux.Stream) {
		if _, err := ReadFrame(st, 0); err != nil {
			t.Error(err)
			return
		}
		WriteFrame(st, TypePushReady, PushReady{})
		io.ReadFull(st, make([]byte, 64<<10))
		WriteError(st, CodeInternal, "write bundle: no space left on device")
		// It reads no more, and keeps the stream open.
		<-t.Context().Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), PushIdle/2)
	defer cancel()
	sent := false
	_, err := Push(ctx, sess, TypeFilePush, FilePush{Name: "f"}, bytes.NewReader(payload), int64(len(payload)), TypeAck, nil, func() { sent = true })
	var re *RemoteError
	if !errors.As(err, &re) || re.Message != "write bundle: no space left on device" || ctx.Err() != nil {
		t.Fatalf("got %v (context %v), want the receiver's refusal at once", err, ctx.Err())
	}
	if sent {
		t.Error("sent was called for a transfer that did not end")
	}
}
