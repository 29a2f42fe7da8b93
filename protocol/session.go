package protocol

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// SessionOptions tunes a yamux session.
type SessionOptions struct {
	// Server is true on the coordinator side.
	Server bool
	// KeepAlive is the interval of yamux pings; 0 turns them off. Agents
	// ping so they notice a dead path and reconnect; the coordinator does
	// not, because its health polls already exercise every session and a
	// keepalive goroutine per agent is memory it need not spend.
	KeepAlive time.Duration
	// Logger receives yamux's own warnings; nil discards them.
	Logger *log.Logger
	// Watch, if set, is told of the streams the peer opens and of the
	// connection's close (see Watch), so that no goroutine need wait in
	// AcceptStream for the whole session.
	Watch *Watch
	// AcceptBacklog is how many opened-but-not-accepted streams the
	// session queues before yamux resets further ones; 0 is the
	// default, 64. A side whose peer opens few streams sets less: the
	// queue is a channel of this many pointers, held session long.
	AcceptBacklog int
	// StreamWindow is the most bytes a stream may receive ahead of its
	// reader; 0 is yamux's 256 KiB, the least it allows. It is only
	// receive room, held while a reader lags, and grows a stream's
	// buffer no further than its peer sends unread.
	StreamWindow uint32
}

// Limits of a session. They bound what one peer can make the other hold.
const (
	// acceptBacklog is how many opened-but-not-accepted streams a session
	// queues by default (SessionOptions.AcceptBacklog); yamux resets
	// streams beyond it instead of growing.
	acceptBacklog = 64
	// writeTimeout closes a session whose peer stopped reading.
	writeTimeout = 15 * time.Second
	// streamOpenTimeout closes a session whose peer never acknowledges a
	// new stream.
	streamOpenTimeout = 30 * time.Second
	// streamCloseTimeout bounds how long a half-closed stream is kept.
	streamCloseTimeout = 30 * time.Second
)

// NewSession starts a yamux session over an established (TLS) connection.
// Closing the session closes conn.
func NewSession(conn net.Conn, o SessionOptions) (*yamux.Session, error) {
	cfg := yamux.DefaultConfig()
	cfg.AcceptBacklog = acceptBacklog
	if o.AcceptBacklog > 0 {
		cfg.AcceptBacklog = o.AcceptBacklog
	}
	if o.StreamWindow > cfg.MaxStreamWindowSize {
		cfg.MaxStreamWindowSize = o.StreamWindow
	}
	cfg.EnableKeepAlive = o.KeepAlive > 0
	if o.KeepAlive > 0 {
		cfg.KeepAliveInterval = o.KeepAlive
	}
	cfg.ConnectionWriteTimeout = writeTimeout
	cfg.StreamOpenTimeout = streamOpenTimeout
	cfg.StreamCloseTimeout = streamCloseTimeout
	cfg.LogOutput = nil
	if o.Logger != nil {
		cfg.Logger = o.Logger
	} else {
		cfg.LogOutput = io.Discard
	}
	fc := &frameConn{Conn: conn, watch: o.Watch}
	if o.Server {
		return yamux.Server(fc, cfg)
	}
	return yamux.Client(fc, cfg)
}

// Call performs one RPC: it opens a stream, writes a request of reqType,
// and reads one reply. A TypeError reply is returned as *RemoteError; a
// reply of another type than respType is an error. resp may be nil when
// the reply has no body of interest. ctx bounds the whole call.
func Call(ctx context.Context, s *yamux.Session, reqType string, req any, respType string, resp any) error {
	return CallSigned(ctx, s, nil, reqType, req, respType, resp)
}

// CallSigned is Call with the request signed by sign (see WriteRequest).
func CallSigned(ctx context.Context, s *yamux.Session, sign Signer, reqType string, req any, respType string, resp any) error {
	st, err := s.OpenStream()
	if err != nil {
		return fmt.Errorf("%s: open stream: %w", reqType, err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	// Cancellation interrupts blocked reads and writes through the
	// deadline, the only interruption a stream offers.
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	if err := WriteRequest(st, sign, reqType, req); err != nil {
		// yamux can report a write as failed when the peer closed the
		// session just after the bytes went out. A reply it sent before
		// closing (why it refused) is already buffered: read it.
		st.SetReadDeadline(time.Now().Add(time.Second))
		if f, rerr := ReadFrame(st, 0); rerr == nil {
			return DecodeReply(f, respType, resp)
		}
		return ctxErr(ctx, err)
	}
	f, err := ReadFrame(st, 0)
	if err != nil {
		return ctxErr(ctx, fmt.Errorf("%s: %w", reqType, err))
	}
	return DecodeReply(f, respType, resp)
}

// DecodeReply checks a reply frame's type and decodes it into resp.
func DecodeReply(f Frame, respType string, resp any) error {
	if f.Type == TypeError {
		var eb ErrorBody
		if err := f.Decode(&eb); err != nil {
			return err
		}
		return &RemoteError{Code: eb.Code, Message: eb.Message, RetryAfter: time.Duration(max(eb.RetryAfterMillis, 0)) * time.Millisecond}
	}
	if f.Type != respType {
		return fmt.Errorf("%w: got %q reply, want %q", ErrMalformedFrame, f.Type, respType)
	}
	if resp == nil {
		return nil
	}
	return f.Decode(resp)
}

// WriteError writes a TypeError frame.
func WriteError(w io.Writer, code, message string) error {
	return WriteFrame(w, TypeError, ErrorBody{Code: code, Message: message})
}

// WriteRefusal writes a TypeError frame for a refusal that passes: the
// peer may come back after about retryAfter (ErrorBody.RetryAfterMillis).
func WriteRefusal(w io.Writer, code, message string, retryAfter time.Duration) error {
	return WriteFrame(w, TypeError, ErrorBody{Code: code, Message: message, RetryAfterMillis: retryAfter.Milliseconds()})
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// LingerClose closes a stream after giving the peer a moment to read the
// reply and close its side. Call reads a reply even when its own
// write was reported failed, but closing a socket with the peer's frames
// still unread makes the kernel reset the connection, and a reset can
// discard a reply the peer has received but not yet read.
func LingerClose(st *yamux.Stream) {
	st.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, io.LimitReader(st, MaxFrameSize))
	st.Close()
}

// RequestTimeout bounds how long a peer may take to send the request on a
// stream it opened; the coordinator holds every agent stream to it.
const RequestTimeout = 30 * time.Second
