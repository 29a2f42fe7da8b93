package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/admission"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/enroll"
	"github.com/tendrildeploy/tendril/server/metrics"
	"github.com/tendrildeploy/tendril/server/store"
)

const (
	// maxStreamsPerAgent bounds the requests one agent can have served at
	// once; further streams wait in yamux's small backlog and beyond that
	// are reset, so one misbehaving peer cannot exhaust the coordinator.
	maxStreamsPerAgent = 16
)

// errReRegistration ends a session whose first call was a --force
// re-registration rather than Hello: the agent reconnects as itself after.
var errReRegistration = errors.New("session was used to register again")

func (s *Server) acceptAgents() error {
	var tempDelay time.Duration
	for {
		conn, err := s.agentLn.Accept()
		if err != nil {
			select {
			case <-s.done:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of file descriptors or similar: back off like
				// net/http does rather than spin.
				tempDelay = max(5*time.Millisecond, min(2*tempDelay, time.Second))
				s.log.Warn("accept failed, retrying", zap.Error(err), zap.Duration("delay", tempDelay))
				select {
				case <-time.After(tempDelay):
				case <-s.done:
					return nil
				}
				continue
			}
			return fmt.Errorf("accept agents: %w", err)
		}
		tempDelay = 0
		s.admit(conn, admission.Source(conn.RemoteAddr()))
	}
}

// admit hands a new connection, TCP or WebSocket, to handleConn past the
// flood guard, or sheds it. src is the source it counts against for the
// per-source cap ("" for none). It is called from a goroutine the server
// tracks, so its own start before shutdown.
func (s *Server) admit(conn net.Conn, src string) {
	if !s.limiter.Allow() {
		// Over the accept rate: told when to come back, but neither
		// waited on nor lingered on (see shed), since this runs in the
		// accept loop. An agent on Linux reads the answer even if its
		// ClientHello, arriving after the close, draws a reset.
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeShed).Inc()
		protocol.WriteBusy(conn, s.admission.Later(), busyNoWaitTimeout)
		conn.Close()
		return
	}
	// Closing the connection is what ends its wait for a first byte when
	// the gate makes room for a newer one. It is told when to come back
	// first (see silent).
	t := s.admission.Arrive(src, func() {
		if s.admission.Saturated() {
			s.silent(conn)
		} else {
			conn.Close()
		}
	})
	s.goFunc(func() { s.handleConn(conn, t) })
}

// serveWebSocket takes an agent session carried in a WebSocket (see
// protocol.WebSocketPath): once upgraded, it is handled as a TCP
// connection is, TLS handshake first. The request itself proves nothing;
// the session inside does.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	conn, err := protocol.AcceptWebSocket(w, r)
	if err != nil {
		return // Accept answered the request with the reason
	}
	conn = remoteConn{Conn: conn, remote: webSocketAddr(r.RemoteAddr)}
	// No per-source cap: behind a reverse proxy every agent comes from
	// the proxy's address, and the cap would hold the whole WebSocket
	// fleet to a share meant for one host. The rest of admission applies
	// (first byte, slots, queue, the accept rate).
	if !s.goIfRunning(func() { s.admit(conn, "") }) {
		conn.Close()
	}
}

// remoteConn names the peer of a WebSocket stream, which does not know it.
type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

// webSocketAddr is the address a WebSocket request came from: the client,
// or the reverse proxy in front of the coordinator.
type webSocketAddr string

func (a webSocketAddr) Network() string { return "websocket" }
func (a webSocketAddr) String() string  { return string(a) }

// silentPlaces is how many connections may be waiting for their first
// byte at most (see Config.HandshakeQueue).
const silentPlaces = 2048

const (
	// busyWriteTimeout bounds writing the busy answer: a few bytes into
	// a fresh connection's empty send buffer.
	busyWriteTimeout = time.Second
	// busyLinger bounds how long a shed connection is held open after
	// the busy answer for the agent to read it and hang up, and
	// busyDrain what is read of it meanwhile (its ClientHello).
	busyLinger = 2 * time.Second
	busyDrain  = 16 << 10
)

// shed turns away a connection before TLS, from the handshake queue,
// with the busy answer (protocol.WriteBusy): when to come back, at the
// next free moment of the rate the coordinator admits handshakes
// (admission.Gate.Later). An agent that understands it comes back then,
// once, instead of after a backoff; an older one sees a failed handshake
// and backs off as before. The coordinator stays responsive for those
// already admitted: the answer costs no TLS.
//
// The agent's ClientHello is read and discarded before the close, and
// the answer followed by the end of what the coordinator sends: closing
// a socket with unread bytes resets it, and a reset may discard the
// answer before the agent reads it.
func (s *Server) shed(conn net.Conn) {
	s.metrics.Handshakes.WithLabelValues(metrics.OutcomeBusy).Inc()
	defer conn.Close()
	if err := protocol.WriteBusy(conn, s.admission.Later(), busyWriteTimeout); err != nil {
		return
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	// Shutdown need not wait out the linger.
	stop := context.AfterFunc(s.ctx, func() { conn.Close() })
	defer stop()
	conn.SetReadDeadline(time.Now().Add(busyLinger))
	io.Copy(io.Discard, io.LimitReader(conn, busyDrain))
}

// busyNoWaitTimeout bounds writing the busy answer where nothing may
// wait on it: a few bytes into a fresh socket's empty send buffer, so
// never blocked but by a WebSocket's peer.
const busyNoWaitTimeout = 100 * time.Millisecond

// silent closes a connection that has not spoken yet to make room for a
// newer one while the handshake slots are saturated, telling it first
// when to come back: then, most are an agent of a fleet starting at once
// behind one address whose ClientHello is late because its host is short
// of CPU, which, told nothing, would back off and come back in waves.
// With slots to spare, a connection that said nothing while a thousand
// newer ones arrived is the flood's, and is closed without a word. A
// flooder ignores the answer; its cost is a write into an empty send
// buffer, and the moment it reserves (admission.Gate.Later bounds how
// far ahead). Not lingered on: nothing was read, so nothing is left
// unread to reset the connection. One silent until FirstByteTimeout is
// closed without a word: after that long, it is no agent.
func (s *Server) silent(conn net.Conn) {
	protocol.WriteBusy(conn, s.admission.Later(), busyNoWaitTimeout)
	conn.Close()
}

// handleConn takes a connection through the handshake admission (its
// first byte, then a slot) and the TLS handshake, and starts its session.
// t is the connection's ticket from the gate; it is released by the end,
// or once the agent is welcomed.
func (s *Server) handleConn(raw net.Conn, t *admission.Ticket) {
	defer t.Release()
	// The first byte is awaited before a slot is taken: a TLS client
	// speaks first and at once, so a connection that says nothing within
	// FirstByteTimeout is not an agent, and it never held a slot meant to
	// bound handshake CPU.
	// Shutdown need not wait out the deadline of a connection that says
	// nothing.
	stop := context.AfterFunc(s.ctx, func() { raw.Close() })
	peeked, err := protocol.Peek(raw, s.cfg.FirstByteTimeout)
	stop()
	if err != nil || !t.Spoke() {
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeSilent).Inc()
		raw.Close()
		return
	}
	if !t.TryTake() {
		// No slot now: the agent's ClientHello says whether it may be
		// kept waiting longer than its handshake timeout (it reads the
		// wait line). It came in the same write as its first byte; one
		// that trickles in is waited for no longer than the first byte
		// was, and holds no place meanwhile.
		var patient bool
		peeked, patient = protocol.ReadHello(peeked, s.cfg.FirstByteTimeout)
		var long time.Duration
		var told func()
		if patient {
			long = s.cfg.HandshakeQueueLongWait
			told = func() { protocol.WriteWait(raw, long, busyNoWaitTimeout) }
		}
		acquired := t.Acquire(s.ctx, long, told)
		if t.Queued() {
			s.metrics.HandshakesQueued.Inc()
		}
		if !acquired {
			s.shed(raw)
			return
		}
	}
	// Lazy fields: a session's logger lives as long as the session, and an
	// eager With encodes its fields into a buffer of its own, about 2 KiB
	// per agent that is rarely, if ever, written.
	log := s.log.WithLazy(zap.String("remote", raw.RemoteAddr().String()))

	raw.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	conn := tls.Server(peeked, s.tlsConf)
	if err := conn.Handshake(); err != nil {
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeFailed).Inc()
		log.Debug("handshake failed", zap.Error(err))
		conn.Close()
		return
	}
	release := t.Release
	if _, err := s.startSession(raw, conn, conn.ConnectionState(), log, release, false); err != nil {
		if errors.Is(err, protocol.ErrIncompatible) {
			// Not the agent's fault and not fixed by its retries.
			log.Warn("agent session refused: the agent is newer than this coordinator", zap.Error(err))
			return
		}
		if errors.Is(err, store.ErrUnavailable) {
			// Every agent that knocks during an outage is refused alike;
			// the heartbeat has said once that the database is gone.
			log.Debug("agent session refused: the database is unreachable", zap.Error(err))
			return
		}
		log.Info("agent session refused", zap.Error(err))
	}
}

// startSession runs the session over a completed handshake, in either
// direction: accepted from a polling agent, or dialed to a listening one
// (dialed). It returns once the agent was welcomed, with a channel closed
// when the session ends, or with why there is no session. An unknown
// certificate on an accepted connection may register; a dialed one was
// pinned to a known agent. conn is the TLS connection, cs its state, and
// raw the connection under it; release gives back the slot the handshake
// held.
func (s *Server) startSession(raw, conn net.Conn, cs tls.ConnectionState, log *zap.Logger, release func(), dialed bool) (<-chan struct{}, error) {
	thumb, _ := certs.PeerThumbprint(cs) // the handshake required a certificate
	log = log.WithLazy(zap.String("thumbprint", thumb), zap.String("tls", protocol.TLSVersionName(cs.Version)))

	// The agent's own requests (a rotation, a re-registration) are rare:
	// the watch accepts them when they come, rather than a goroutine
	// waiting for them for the whole session (serveAgent).
	watch := new(protocol.Watch)
	opts := protocol.SessionOptions{Server: true, Logger: yamuxLogger(log), Watch: watch, AcceptBacklog: maxStreamsPerAgent}
	if dialed {
		// The coordinator keeps this session alive itself: it is the
		// side that redials, so it must notice a dead path before a
		// task does.
		opts.KeepAlive = dialedKeepAlive
	}
	sess, err := protocol.NewSession(conn, opts)
	if err != nil {
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeFailed).Inc()
		conn.Close()
		return nil, fmt.Errorf("start session: %w", err)
	}
	// The session and everything serving it end with the server. The
	// close hangs on the server's context rather than the session's: one
	// registered on the session's own would give every session a map of
	// children and a channel it never needs otherwise.
	ctx, cancel := context.WithCancel(s.ctx)
	stop := context.AfterFunc(s.ctx, func() { sess.Close() })
	end := func() {
		stop()
		cancel()
		sess.Close()
	}
	handedOff := false
	defer func() {
		if !handedOff {
			end()
		}
	}()

	if !dialed {
		// Checked here rather than in the handshake, which would end the
		// connection before the agent could be told why. A dialed agent
		// was pinned to a registered certificate.
		reason, err := s.store.RevocationReason(ctx, thumb)
		switch {
		case err == nil:
			s.metrics.Handshakes.WithLabelValues(metrics.OutcomeRefused).Inc()
			s.refuseRevoked(sess, thumb, reason, log)
			return nil, nil
		case !errors.Is(err, store.ErrNotFound):
			s.metrics.Handshakes.WithLabelValues(metrics.OutcomeFailed).Inc()
			s.refuseStoreFailure(sess, err)
			return nil, fmt.Errorf("check revocation: %w", err)
		}
	}
	agent, err := s.store.AgentByThumbprint(ctx, thumb)
	switch {
	case errors.Is(err, store.ErrNotFound) && !dialed:
		release()
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeOK).Inc()
		s.enroll.Serve(ctx, sess, thumb, log)
		return nil, nil
	case err != nil:
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeFailed).Inc()
		s.refuseStoreFailure(sess, err)
		return nil, fmt.Errorf("look up agent: %w", err)
	}
	if agent.NextThumbprint == thumb {
		// The agent connected with the certificate it presented during a
		// rotation: it is now its only certificate.
		if err := s.store.PromoteThumbprint(ctx, agent.ID); err != nil {
			s.refuseStoreFailure(sess, err)
			return nil, fmt.Errorf("promote rotated agent certificate: %w", err)
		}
		log.Info("agent certificate rotated", zap.String("agent", agent.Name))
	}
	as, err := s.hello(ctx, sess, agent, cs, thumb, raw.RemoteAddr().String())
	if errors.Is(err, errReRegistration) {
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeOK).Inc()
		return nil, nil
	}
	if err != nil {
		s.metrics.Handshakes.WithLabelValues(metrics.OutcomeRefused).Inc()
		return nil, fmt.Errorf("agent %s: %w", agent.Name, err)
	}
	raw.SetDeadline(time.Time{})
	release()
	s.metrics.Handshakes.WithLabelValues(metrics.OutcomeOK).Inc()
	// Served without a goroutine of its own (serveAgent); the session's
	// end, however it comes, is counted in s.wg like any goroutine the
	// server started, so that the store outlives its record of it.
	handedOff = true
	done := make(chan struct{})
	s.wg.Add(1)
	s.serveAgent(ctx, as, watch, log.WithLazy(zap.String("agent", agent.Name)), func() {
		defer s.wg.Done()
		defer close(done)
		end()
	})
	return done, nil
}

// revokedLogEvery is how often the refusal of one revoked certificate is
// logged at most; the line counts the refusals since the previous one.
const revokedLogEvery = time.Minute

// refuseRevoked answers the first request of a session made with a revoked
// certificate (a Hello, a Register, anything) with the reason and what to
// do, and logs the refusal, at most once a minute per certificate. The
// handshake's deadline, still set, bounds the exchange; the admission slot
// is held until it ends, as for a Hello.
func (s *Server) refuseRevoked(sess *yamux.Session, thumb, reason string, log *zap.Logger) {
	if ok, n := s.revokedLog.Note(thumb); ok {
		log.Warn("refused a revoked agent certificate", zap.String("reason", reason),
			zap.Int("refusals", n), zap.Duration("logged_at_most_every", revokedLogEvery))
	}
	st, err := sess.AcceptStream()
	if err != nil {
		return
	}
	msg := revokedMessage(reason)
	if f, err := protocol.ReadFrame(st, 0); err == nil && f.Type == protocol.TypeRegister {
		msg = enroll.RevokedRegisterMessage
	}
	protocol.WriteError(st, protocol.CodeRevoked, msg)
	// The session closes after this: let the agent read why.
	protocol.LingerClose(st)
}

// refuseStoreFailure answers the first request of a session that the
// store failed to look up, rather than closing it on the agent with a
// bare EOF: the agent is told why and, when the database is unreachable,
// when to come back. The handshake's deadline, still set, bounds the
// exchange.
func (s *Server) refuseStoreFailure(sess *yamux.Session, err error) {
	st, aerr := sess.AcceptStream()
	if aerr != nil {
		return
	}
	protocol.ReadFrame(st, 0) // a Hello or a Register: answered alike
	s.writeStoreRefusal(st, err, "look up this agent")
	// The session closes after this: let the agent read why.
	protocol.LingerClose(st)
}

// writeStoreRefusal answers a request the store failed to serve: when the
// database is unreachable, with CodeUnavailable, saying so and when to
// come back (the agent comes back then rather than after a backoff grown
// over the outage); otherwise with CodeInternal, saying what failed.
func (s *Server) writeStoreRefusal(w io.Writer, err error, what string) {
	if errors.Is(err, store.ErrUnavailable) {
		after := s.pace.RetryAfter()
		protocol.WriteRefusal(w, protocol.CodeUnavailable, fmt.Sprintf(
			"coordinator node %s cannot reach its database, so it cannot %s now; come back in %s",
			s.members.Name(), what, after.Round(100*time.Millisecond)), after)
		return
	}
	protocol.WriteError(w, protocol.CodeInternal, fmt.Sprintf("coordinator could not %s; its log says why", what))
}

// revokedMessage tells the agent holding a certificate revoked for reason
// (a store.Revoked* constant) why it is refused and what to do.
func revokedMessage(reason string) string {
	switch reason {
	case store.RevokedDeleted:
		return "this agent was deleted on the coordinator: register again with --force"
	case store.RevokedReplaced:
		return "this agent was replaced on the coordinator: another registration with --force took its name or certificate; " +
			"register again with --force if this machine is to be that agent"
	case store.RevokedRotated:
		return "this agent's certificate was replaced by a certificate rotation, and its home holds the old one (restored from a backup?): register again with --force"
	}
	return "this agent's certificate was revoked on the coordinator: register again with --force"
}

// hello reads the agent's Hello on its first stream, negotiates the
// protocol and answers Welcome. thumb is the thumbprint of the agent's
// certificate in cs.
func (s *Server) hello(ctx context.Context, sess *yamux.Session, a store.Agent, cs tls.ConnectionState, thumb, remote string) (*agentSession, error) {
	st, err := sess.AcceptStream()
	if err != nil {
		return nil, fmt.Errorf("wait for hello: %w", err)
	}
	welcomed := false
	defer func() {
		if welcomed {
			st.Close()
		} else {
			// The session is about to close: let the agent read why.
			protocol.LingerClose(st)
		}
	}()
	st.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		protocol.WriteError(st, protocol.CodeBadRequest, "expected hello: "+err.Error())
		return nil, fmt.Errorf("read hello: %w", err)
	}
	if f.Type == protocol.TypeRegister {
		// A registered agent re-enrolling with --force.
		s.enroll.Register(ctx, st, f, thumb)
		return nil, errReRegistration
	}
	if f.Type != protocol.TypeHello {
		protocol.WriteError(st, protocol.CodeBadRequest, fmt.Sprintf("the first message must be hello, got %q", f.Type))
		return nil, fmt.Errorf("first message %q is not hello", f.Type)
	}
	var h protocol.Hello
	if err := f.Decode(&h); err != nil {
		protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
		return nil, err
	}
	if h.ProtocolMin <= 0 || h.ProtocolMax < h.ProtocolMin {
		protocol.WriteError(st, protocol.CodeBadRequest, fmt.Sprintf("protocol range %d-%d is not a range", h.ProtocolMin, h.ProtocolMax))
		return nil, fmt.Errorf("hello: protocol range %d-%d is not a range", h.ProtocolMin, h.ProtocolMax)
	}
	v, upgradeOnly, err := protocol.Negotiate(h.ProtocolMin, h.ProtocolMax, s.cfg.ProtocolMin, s.cfg.ProtocolMax)
	if err != nil {
		why := fmt.Sprintf("agent %s speaks protocol %d-%d, coordinator %s %d-%d; upgrade the coordinator",
			h.Version, h.ProtocolMin, h.ProtocolMax, s.cfg.Version, s.cfg.ProtocolMin, s.cfg.ProtocolMax)
		protocol.WriteError(st, protocol.CodeIncompatible, why)
		// Shown in the agent's listing, which would otherwise only say
		// "not connected", until it connects.
		s.refused.Store(a.ID, why)
		return nil, fmt.Errorf("%w (%s)", err, why)
	}
	s.refused.Delete(a.ID)
	if s.members.Draining() {
		s.refuseDraining(ctx, sess, st)
		return nil, errDraining
	}
	if err := s.store.RecordConnection(ctx, store.Connection{
		AgentID: a.ID, Version: h.Version, OS: h.OS, Arch: h.Arch, Protocol: v,
		TLSVersion: protocol.TLSVersionName(cs.Version), CalamariVersions: h.Calamari, Features: h.Features, At: time.Now().UTC(),
		Node: s.nodeID(),
	}); err != nil {
		s.writeStoreRefusal(st, err, "record the session")
		return nil, err
	}
	// Rollouts learn here that an upgraded agent came back, and how its
	// upgrade ended; the report is acknowledged only once stored.
	upgradeAcked := s.rollouts.NoteHello(ctx, a.ID, a.Name, h)
	as := &agentSession{
		agentID: a.ID, name: a.Name, sign: s.signer(a.ID), thumbprint: thumb, sess: sess,
		tlsVersion: cs.Version, protocol: v, upgradeOnly: upgradeOnly, listening: a.Listening(),
		connectedAt: time.Now(), remote: remote, serverAck: a.ServerThumbprintAck,
		signingKey:     h.SigningKey,
		isolates:       slices.Contains(h.Features, protocol.FeatureIsolation),
		variables:      slices.Contains(h.Features, protocol.FeatureVariables),
		retains:        slices.Contains(h.Features, protocol.FeatureWorkRetention),
		taskOutcome:    slices.Contains(h.Features, protocol.FeatureTaskOutcome),
		startsCalamari: slices.Contains(h.Features, protocol.FeatureStartCalamari),
	}
	retention := s.retentionRule()
	// The session is listed before the agent hears Welcome, so that once
	// an agent knows it is connected, so does every API call.
	if old := s.sessions.add(as); old != nil {
		// A reconnect, or the new session of a certificate rotation.
		old.sess.Close()
	}
	if known, alive := s.nodeAlive(a.Node); a.Node != "" && a.Node != s.nodeID() && (alive || !known) {
		// Its session on another node, if that one still thinks it has
		// it, is stale: that node lets go of it and of its tasks.
		s.notifyCluster(cluster.NotifyMoved, a.ID, s.nodeID())
	}
	if err := protocol.WriteFrame(st, protocol.TypeWelcome, protocol.Welcome{
		Protocol: v, UpgradeOnly: upgradeOnly, ServerVersion: s.cfg.Version,
		AgentID: a.ID, Name: a.Name, Environment: a.Environment,
		ServerThumbprints: s.ids.Thumbprints(), UpgradeAcknowledged: upgradeAcked,
		ReconnectSpreadMillis: admission.ReconnectSpread(s.sessions.count()).Milliseconds(),
		Servers:               s.members.WelcomeServers(),
		SigningKey:            s.signing.Public(),
		WorkRetention:         &retention,
	}); err != nil {
		if s.sessions.remove(as) {
			// Recorded at the top as this node's session, which it never
			// became: left, the record would say this node holds it.
			if derr := s.store.DisconnectAgent(context.WithoutCancel(ctx), a.ID, s.nodeID(), time.Now().UTC()); derr != nil {
				err = errors.Join(err, fmt.Errorf("record the disconnect: %w", derr))
			}
		}
		return nil, err
	}
	welcomed = true
	// Said in Welcome; a policy changed meanwhile is sent again.
	as.setRetentionSent(retention)
	// Its unfinished tasks are driven from here now.
	s.kickClaims()
	return as, nil
}

// serveAgent serves a registered agent's session, listed by hello, with
// no goroutine of its own: the streams the agent opens are accepted by
// watch when they come, and when the connection closes a goroutine
// unlists the session, records the disconnect and calls ended.
func (s *Server) serveAgent(ctx context.Context, as *agentSession, watch *protocol.Watch, log *zap.Logger, ended func()) {
	log.Info("agent connected", zap.Int("protocol", as.protocol), zap.Bool("upgrade_only", as.upgradeOnly))
	s.welcome(ctx, as)
	sem := make(chan struct{}, maxStreamsPerAgent)
	handle := func(st *yamux.Stream) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			st.Close()
			return
		}
		s.goFunc(func() {
			defer func() { <-sem }()
			s.serveAgentStream(ctx, as, st, log)
		})
	}
	// hello accepted the Hello stream.
	watch.Serve(as.sess, 1, handle, func() {
		// Started by the connection's close, ended here; counted in
		// s.wg by startSession until ended.
		go func() {
			defer ended()
			// No stream is handed on after this: every goFunc of handle
			// happened while s.wg still counted this session.
			watch.Wait()
			if s.sessions.remove(as) {
				log.Info("agent disconnected")
				if err := s.store.DisconnectAgent(context.Background(), as.agentID, s.nodeID(), time.Now().UTC()); err != nil {
					// Other nodes see the agent as held here until this node
					// stops or its listening-agent scan clears the record.
					log.Warn("record the disconnect failed", zap.Error(err))
				}
			}
		}()
	})
}

func (s *Server) serveAgentStream(ctx context.Context, as *agentSession, st *yamux.Stream, log *zap.Logger) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(protocol.RequestTimeout))
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
		return
	}
	switch f.Type {
	case protocol.TypeRotateCertificate:
		var rc protocol.RotateCertificate
		if err := f.Decode(&rc); err != nil {
			protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
			return
		}
		if err := s.acceptAgentRotation(ctx, as, rc); err != nil {
			log.Warn("agent certificate rotation refused", zap.Error(err))
			protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
			return
		}
		log.Info("agent presented its next certificate")
		protocol.WriteFrame(st, protocol.TypeAck, nil)
	case protocol.TypeRegister:
		s.enroll.Register(ctx, st, f, as.thumbprint)
	default:
		protocol.WriteError(st, protocol.CodeUnknownType, fmt.Sprintf("unknown message type %q", f.Type))
	}
}

func (s *Server) acceptAgentRotation(ctx context.Context, as *agentSession, rc protocol.RotateCertificate) error {
	c, err := certs.ParseSelfSigned(rc.Certificate)
	if err != nil {
		return fmt.Errorf("next certificate: %w", err)
	}
	next := certs.Thumbprint(c.Raw)
	if next == as.thumbprint {
		return errors.New("next certificate is the current one")
	}
	revoked, err := s.store.IsRevoked(ctx, next)
	if err != nil {
		return err
	}
	if revoked {
		return errors.New("next certificate was revoked")
	}
	return s.store.SetNextThumbprint(ctx, as.agentID, next)
}

// dropAgent ends an agent's session, telling it why and that it must not
// come back with the same certificate.
func (s *Server) dropAgent(id, reason string) {
	as := s.sessions.get(id)
	if as == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	protocol.CallSigned(ctx, as.sess, as.sign, protocol.TypeGoAway, protocol.GoAway{Reason: reason}, protocol.TypeAck, nil)
	as.sess.Close()
	s.sessions.remove(as)
}

// yamuxLogger is a session's logger for yamux's own messages. The logger
// is named when yamux writes, which it rarely does, rather than cloned
// for every session up front.
func yamuxLogger(l *zap.Logger) *log.Logger {
	return log.New(&zapWriter{log: l, name: "yamux"}, "", 0)
}
