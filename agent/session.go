package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/proxy"
)

// Limits on what the coordinator can make one session hold.
const (
	// maxHandlers is how many coordinator requests are served at once per
	// session; the accept loop waits when they are all busy, and yamux's
	// backlog then pushes back on the coordinator.
	maxHandlers = 16
	// streamTimeout bounds reading a request and writing its reply.
	streamTimeout = 30 * time.Second
	// goAwayGrace is how long the agent lets the coordinator close the
	// session itself after a GoAway, so the acknowledgement is not lost
	// to a connection reset.
	goAwayGrace = time.Second
)

// errConnectionLost is the reason given when a session ends without the
// coordinator saying why.
var errConnectionLost = errors.New("connection lost")

// liveSession is one session to the coordinator and the goroutines
// serving it.
type liveSession struct {
	addr       string
	ys         *yamux.Session
	tlsVersion uint16
	// thumbprint is the agent certificate the session was made with.
	thumbprint  string
	welcome     protocol.Welcome
	established time.Time
	goAway      atomic.Pointer[protocol.GoAway]
	handlers    chan struct{} // a slot per running handler
	follows     chan struct{} // a slot per task follow
	// welcomed is closed once the Welcome is applied: its signing key
	// learned, its certificate list adopted. Requests other than GoAway
	// wait for it, since the coordinator may send them as soon as it has
	// written the Welcome, before this side has read it.
	welcomed chan struct{}
	// ctx is done when the session closes; handlers wait on it (for a
	// lock, for a task's next log entry) rather than on their own.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// close ends the session and waits for its goroutines. It is idempotent,
// and must not be called from one of those goroutines.
func (s *liveSession) close() {
	s.cancel()
	s.ys.Close()
	s.wg.Wait()
}

// dialTLS connects to addr, through the proxy via names for it if any,
// and completes the TLS handshake, each step bounded by its own timeout as
// well as by ctx. Through a proxy the handshake runs inside the tunnel:
// the proxy sees only the CONNECT.
//
// dial, if not nil, makes a direct TCP connection (Config.Dial).
func dialTLS(ctx context.Context, via proxy.Setting, addr string, cfg *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error), dialTimeout, handshakeTimeout time.Duration) (*tls.Conn, error) {
	var raw net.Conn
	var p *url.URL
	var err error
	if protocol.IsWebSocket(addr) {
		raw, err = dialWebSocket(ctx, via, addr, dialTimeout)
		if err != nil {
			return nil, fmt.Errorf("dial coordinator %s: %w", addr, err)
		}
	} else if p, err = via.For(addr); err != nil {
		return nil, fmt.Errorf("dial coordinator %s: %w", addr, err)
	} else if p != nil {
		raw, err = proxy.Dial(ctx, p, addr, dialTimeout)
		if err != nil {
			return nil, fmt.Errorf("dial coordinator %s through proxy %s: %w", addr, proxy.Redact(p.String()), err)
		}
	} else {
		if dial == nil {
			dial = (&net.Dialer{Timeout: dialTimeout}).DialContext
		}
		raw, err = dial(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("dial coordinator %s: %w", addr, err)
		}
	}
	// A coordinator that sheds the connection says when to come back in
	// plain text instead of TLS (protocol.BusyConn), directly, through a
	// proxy's tunnel or inside the WebSocket alike.
	watch := protocol.WatchBusy(raw)
	// A coordinator that queues the handshake longer than the deadline
	// below allows says so first (the wait line): the handshake gets that
	// much longer, and no more, so a peer that says nothing still fails
	// it at the deadline.
	watch.OnWait = func(d time.Duration) { raw.SetDeadline(time.Now().Add(d + handshakeTimeout)) }
	conn := tls.Client(watch, cfg)
	// Through a WebSocket the deadline below bounds the handshake too: one
	// that passes ends the WebSocket, as the failed handshake would.
	// A deadline rather than a context timeout alone, so a peer that
	// accepts TCP and then says nothing cannot hold the attempt.
	raw.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := conn.HandshakeContext(ctx); err != nil {
		err = watch.Busy(err)
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with coordinator %s: %w", addr, err)
	}
	raw.SetDeadline(time.Time{})
	return conn, nil
}

// connect makes one session to addr and serves it until it ends or ctx is
// done.
func (a *Agent) connect(ctx context.Context, addr string) outcome {
	s, err := a.establish(ctx, addr, a.identity())
	if err != nil {
		out := outcome{err: err}
		var ga *goAwayError
		if errors.As(err, &ga) {
			out.goAway = &ga.g
		}
		return out
	}
	a.setConnected(s)
	a.log.Info("connected to coordinator",
		zap.String("server", s.addr),
		zap.String("tls_version", protocol.TLSVersionName(s.tlsVersion)),
		zap.Int("protocol", s.welcome.Protocol),
		zap.Bool("upgrade_only", s.welcome.UpgradeOnly),
		zap.String("agent_id", s.welcome.AgentID))
	if s.welcome.UpgradeOnly {
		a.log.Warn("this agent is too old for the coordinator: it runs no tasks until a rollout upgrades it (tendril-server upgrade)",
			zap.String("server_version", s.welcome.ServerVersion))
	}
	s = a.serve(ctx, s)
	out := outcome{
		err: errConnectionLost, welcomed: true, lasted: time.Since(s.established), goAway: s.goAway.Load(),
		spread: time.Duration(s.welcome.ReconnectSpreadMillis) * time.Millisecond,
	}
	if out.goAway != nil {
		out.err = &goAwayError{*out.goAway}
	}
	return out
}

// establish dials addr with identity id, starts serving the coordinator's
// requests, and says Hello. The session is returned only once Welcome
// arrived.
func (a *Agent) establish(ctx context.Context, addr string, id *certs.Identity) (*liveSession, error) {
	a.stateMu.Lock()
	hint := a.state.ServerHint
	a.stateMu.Unlock()
	tlsCfg := protocol.ClientTLS{
		Identity:   id,
		Pins:       a.pins,
		Hint:       hint,
		MinVersion: a.cfg.TLSMinVersion,
		MaxVersion: a.cfg.TLSMaxVersion,
		Endorsed:   a.endorsement(),
	}.Config()
	conn, err := dialTLS(ctx, a.proxy, addr, tlsCfg, a.cfg.Dial, a.cfg.DialTimeout, a.cfg.HandshakeTimeout)
	if err != nil {
		return nil, err
	}
	return a.startSession(ctx, conn, addr, id)
}

// streamWindow is how far the coordinator may send ahead of the agent's
// reader on a stream. yamux grants the window again each time the reader
// has taken half of it: at its 256 KiB a push of 100 MiB cost 800 window
// updates, each a small TLS record the agent encrypts and writes and the
// coordinator reads; at 4 MiB it is 50. In figure 5's profiles (runs
// alternated with 256 KiB) the agent's writes of window updates went from
// 0.50 s to 0.07 s in 35 pushes, but yamux's receive buffer, now holding
// a deeper backlog, cost about as much more to grow and slide; the
// coordinator's CPU per push went from 0.14 to 0.11 s, and the agent's
// per MiB (from /proc) from 2.75 to 2.66 ms (medians of 8 and 7 runs).
// It costs memory only while a reader lags behind its peer: a stream
// buffers at most this much.
const streamWindow = 4 << 20

// startSession runs a session over a completed handshake with the
// coordinator at addr, dialed or (for a listening agent) accepted: it
// starts serving the coordinator's requests and says Hello. The session
// is returned only once Welcome arrived; on failure conn is closed.
func (a *Agent) startSession(ctx context.Context, conn *tls.Conn, addr string, id *certs.Identity) (*liveSession, error) {
	ys, err := protocol.NewSession(conn, protocol.SessionOptions{KeepAlive: a.cfg.KeepAlive, StreamWindow: streamWindow})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start session with coordinator %s: %w", addr, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &liveSession{
		addr:       addr,
		ys:         ys,
		tlsVersion: conn.ConnectionState().Version,
		thumbprint: id.Thumbprint,
		handlers:   make(chan struct{}, maxHandlers),
		follows:    make(chan struct{}, maxFollows),
		welcomed:   make(chan struct{}),
		ctx:        sctx,
		cancel:     cancel,
	}
	// Serving starts before Hello: the coordinator may send a GoAway
	// instead of a Welcome, and it must be heard.
	s.wg.Go(func() { a.acceptLoop(s) })

	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	hello := a.hello()
	if err := protocol.Call(callCtx, ys, protocol.TypeHello, hello, protocol.TypeWelcome, &s.welcome); err != nil {
		s.close()
		if g := s.goAway.Load(); g != nil {
			return nil, fmt.Errorf("hello to coordinator %s: %w", addr, &goAwayError{*g})
		}
		return nil, fmt.Errorf("hello to coordinator %s: %w", addr, err)
	}
	s.established = time.Now()
	a.upgradeWelcomed(hello.Upgrade, s.welcome)
	if len(s.welcome.Servers) > 0 {
		if err := a.learnServers(s.welcome.Servers); err != nil {
			a.log.Warn("could not save the coordinator nodes' addresses", zap.Error(err))
		}
	}
	if len(s.welcome.ServerThumbprints) > 0 {
		// The session is good either way; a list that cannot be used now
		// is offered again on the next Welcome.
		list, err := normalizeThumbprints(s.welcome.ServerThumbprints)
		if err == nil {
			err = a.adoptServerThumbprints(list)
		}
		if err != nil {
			a.log.Warn("could not adopt the coordinator's certificate list", zap.Error(err))
		}
	}
	if err := a.adoptWelcome(s.welcome); err != nil {
		a.log.Warn("could not save what the coordinator said of this agent", zap.Error(err))
	}
	a.adoptRetention(s.welcome.WorkRetention)
	close(s.welcomed)
	return s, nil
}

// serve waits until the session ends or ctx is done, meanwhile checking
// for a pending certificate rotation, which may replace the session. It
// returns the last session, closed.
func (a *Agent) serve(ctx context.Context, s *liveSession) *liveSession {
	t := time.NewTicker(a.cfg.RotationCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// A go-away first: the coordinator learns the agent is
			// leaving on purpose, not that its connection broke.
			if err := s.ys.GoAway(); err != nil {
				a.log.Debug("could not send go-away", zap.Error(err))
			}
			s.close()
			return s
		case <-s.ys.CloseChan():
			s.close()
			return s
		case <-t.C:
			if ns := a.rotate(ctx, s); ns != nil {
				s.close()
				s = ns
			}
		}
	}
}

func (a *Agent) acceptLoop(s *liveSession) {
	for {
		st, err := s.ys.AcceptStream()
		if err != nil {
			return // the session is closed
		}
		select {
		case s.handlers <- struct{}{}:
		case <-s.ys.CloseChan():
			st.Close()
			return
		}
		s.wg.Go(func() {
			var once sync.Once
			release := func() { once.Do(func() { <-s.handlers }) }
			defer release()
			a.handle(s, st, release)
		})
	}
}

// handle serves one request: one frame in, and a reply (a stream of them
// for a follow, a transfer in between for a push). release gives back the
// request's handler slot early, for a request that lasts long.
func (a *Agent) handle(s *liveSession, st *yamux.Stream, release func()) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(streamTimeout))
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		a.log.Debug("could not read a request from the coordinator", zap.Error(err))
		return
	}
	if f.Type != protocol.TypeGoAway {
		select {
		case <-s.welcomed:
		case <-s.ctx.Done():
			return // the session ended before its Welcome came
		}
	}
	if protocol.IsSignedType(f.Type) {
		if err := a.checkRequest(f, time.Now()); err != nil {
			a.log.Warn("refused a request its coordinator's signing key did not sign", zap.String("type", f.Type), zap.Error(err))
			protocol.WriteError(st, protocol.CodeUnauthorized, err.Error())
			return
		}
	}
	switch f.Type {
	case protocol.TypeHealthRequest:
		err = protocol.WriteFrame(st, protocol.TypeHealth, a.health())
	case protocol.TypeServerCertificates:
		err = a.handleServerCertificates(st, f)
	case protocol.TypeGoAway:
		err = a.handleGoAway(s, st, f)
	case protocol.TypeCalamariCheck:
		err = a.handleCalamariCheck(st, f)
	case protocol.TypeCalamariPush:
		err = a.handleCalamariPush(s, st, f)
	case protocol.TypeFilePush:
		err = a.handleFilePush(s, st, f)
	case protocol.TypeTaskStart:
		err = a.handleTaskStart(s, st, f)
	case protocol.TypeTaskFollow:
		err = a.handleTaskFollow(s, st, f, release)
	case protocol.TypeTaskCancel:
		err = a.handleTaskCancel(s, st, f)
	case protocol.TypeArtifactFetch:
		err = a.handleArtifactFetch(st, f)
	case protocol.TypeAgentUpgrade:
		err = a.handleAgentUpgrade(s, st, f)
	case protocol.TypeDiagnostics:
		err = a.handleDiagnostics(s, st, f)
	case protocol.TypeWorkRetention:
		err = a.handleWorkRetention(st, f)
	default:
		err = protocol.WriteError(st, protocol.CodeUnknownType, fmt.Sprintf("unknown message type %q", f.Type))
	}
	if err != nil {
		// The coordinator went away mid-request; the session's end is
		// logged by Run.
		a.log.Debug("could not answer the coordinator", zap.String("type", f.Type), zap.Error(err))
	}
}

func (a *Agent) handleServerCertificates(st *yamux.Stream, f protocol.Frame) error {
	var req protocol.ServerCertificates
	if err := f.Decode(&req); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	if len(req.Thumbprints) == 0 {
		return protocol.WriteError(st, protocol.CodeBadRequest, "empty coordinator certificate list: the agent would trust no coordinator")
	}
	list, err := normalizeThumbprints(req.Thumbprints)
	if err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	if err := a.adoptServerThumbprints(list); err != nil {
		return protocol.WriteError(st, protocol.CodeInternal, err.Error())
	}
	a.log.Info("coordinator certificate list updated", zap.Strings("thumbprints", list))
	return protocol.WriteFrame(st, protocol.TypeAck, nil)
}

func (a *Agent) handleGoAway(s *liveSession, st *yamux.Stream, f protocol.Frame) error {
	var g protocol.GoAway
	if err := f.Decode(&g); err != nil {
		return protocol.WriteError(st, protocol.CodeBadRequest, err.Error())
	}
	s.goAway.Store(&g)
	err := protocol.WriteFrame(st, protocol.TypeAck, nil)
	t := time.NewTimer(goAwayGrace)
	select {
	case <-s.ys.CloseChan():
	case <-t.C:
	}
	t.Stop()
	s.ys.Close()
	return err
}

func normalizeThumbprints(in []string) ([]string, error) {
	out := make([]string, len(in))
	for i, t := range in {
		n, err := certs.NormalizeThumbprint(t)
		if err != nil {
			return nil, fmt.Errorf("coordinator %w", err)
		}
		out[i] = n
	}
	return out, nil
}

// goAwayError is a session the coordinator ended with a GoAway.
type goAwayError struct{ g protocol.GoAway }

func (e *goAwayError) Error() string {
	return "coordinator closed the session: " + e.g.Reason
}

// adoptServerThumbprints saves a new list of trusted coordinator
// thumbprints and applies it to the next handshake. The pins change only
// once the file is written, so the agent never trusts in memory what it
// would forget on restart.
func (a *Agent) adoptServerThumbprints(list []string) error {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if slices.Equal(list, a.state.ServerThumbprints) && a.state.ServerHint == list[0] {
		return nil
	}
	next := a.state
	next.ServerThumbprints = slices.Clone(list)
	next.ServerHint = list[0]
	if err := saveState(a.cfg.Home, next); err != nil {
		return err
	}
	a.state = next
	a.pins.Set(list...)
	return nil
}

// endorsement lets a handshake accept a coordinator certificate made by
// rotations this agent missed, endorsed by the signing key it pinned.
func (a *Agent) endorsement() *protocol.Endorsement {
	return &protocol.Endorsement{SigningKey: a.signingKey, Learned: a.learnEndorsed}
}

// learnEndorsed pins an endorsed coordinator certificate the agent did
// not know, first in its list (and its hint), keeping the others: the
// coordinator's next ServerCertificates says which remain trusted.
func (a *Agent) learnEndorsed(thumbprint string) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if slices.Contains(a.state.ServerThumbprints, thumbprint) {
		return
	}
	next := a.state
	next.ServerThumbprints = append([]string{thumbprint}, a.state.ServerThumbprints...)
	next.ServerHint = thumbprint
	if err := saveState(a.cfg.Home, next); err != nil {
		// Trusted for this process still: the handshake checked the
		// endorsement, and the next one checks it again.
		a.log.Error("could not record the coordinator's endorsed certificate", zap.String("thumbprint", thumbprint), zap.Error(err))
	}
	a.state = next
	a.pins.Set(next.ServerThumbprints...)
	a.log.Info("coordinator certificate learned from its endorsement by the pinned signing key", zap.String("thumbprint", thumbprint))
}

// learnServers records the coordinator nodes' addresses a Welcome
// announced, beyond those the agent registered with, and tries them from
// the next attempt on. Only Run's goroutine calls it. An agent that
// reaches the coordinator only as a WebSocket learns none: the nodes'
// direct addresses are what its network does not let it dial, and trying
// them would only slow every reconnect.
func (a *Agent) learnServers(announced []string) error {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	if !slices.ContainsFunc(a.state.Servers, func(s string) bool { return !protocol.IsWebSocket(s) }) {
		announced = nil
	}
	var learned []string
	for _, s := range announced {
		if protocol.ValidateAddress(s) == nil && !slices.Contains(a.state.Servers, s) && !slices.Contains(learned, s) {
			learned = append(learned, s)
		}
	}
	if slices.Equal(learned, a.state.LearnedServers) {
		return nil
	}
	next := a.state
	next.LearnedServers = learned
	if err := saveState(a.cfg.Home, next); err != nil {
		return err
	}
	a.state = next
	a.servers = serverList(next)
	a.log.Info("coordinator nodes learned", zap.Strings("servers", a.servers))
	return nil
}

// serverList is every address to try: the registered ones, then the
// learned ones.
func serverList(st State) []string {
	return append(slices.Clone(st.Servers), st.LearnedServers...)
}

func (a *Agent) hello() protocol.Hello {
	versions, _ := a.calamari.Scan()
	return protocol.Hello{
		Version:     a.cfg.Version,
		ProtocolMin: a.cfg.ProtocolMin,
		ProtocolMax: a.cfg.ProtocolMax,
		OS:          runtime.GOOS,
		Arch:        runtime.GOARCH,
		Hostname:    a.hostname,
		Calamari:    versions,
		Upgrade:     a.upgradeReport(),
		Busy:        a.tasks.Running() > 0,
		SigningKey:  a.signingKey(),
		Features:    []string{protocol.FeatureIsolation, protocol.FeatureVariables, protocol.FeatureWorkRetention, protocol.FeatureSignedRequests, protocol.FeatureEndorsedCertificates, protocol.FeatureTaskOutcome, protocol.FeatureStartCalamari},
	}
}

func (a *Agent) health() protocol.Health {
	versions, problems := a.calamari.Scan()
	return protocol.Health{
		Version:          a.cfg.Version,
		UptimeSeconds:    int64(time.Since(a.started) / time.Second),
		OS:               runtime.GOOS,
		Arch:             runtime.GOARCH,
		Hostname:         a.hostname,
		DiskFree:         diskFree(a.cfg.Home),
		Calamari:         versions,
		CalamariProblems: problems,
		RunningTasks:     a.tasks.Running(),
		Work:             new(a.tasks.WorkReport()),
	}
}

// dialWebSocket opens the WebSocket a coordinator behind web
// infrastructure takes sessions on, through the proxy via names for its
// host if any.
func dialWebSocket(ctx context.Context, via proxy.Setting, addr string, timeout time.Duration) (net.Conn, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"ws": "80", "wss": "443"}[u.Scheme]
	}
	p, err := via.For(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               func(*http.Request) (*url.URL, error) { return p, nil },
		DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
		TLSHandshakeTimeout: timeout,
		DisableKeepAlives:   true,
	}
	ctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	return protocol.DialWebSocket(ctx, addr, &http.Client{Transport: tr})
}
