package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// The anchor of figure 1: what a plain Go server keeps per idle session
// when it does what the coordinator's transport does and nothing else.
// plain-server is TLS 1.3 with the agent session's settings (ECDSA
// certificates both ways, pinned by thumbprint: protocol.ServerTLS and
// ClientTLS), yamux.Server with yamux.DefaultConfig(), and one goroutine
// per session accepting its streams, as a typical yamux server has.
// plain-clients dials it N times from another process, opens one stream
// per session (a hello the server answers, so the session is known to
// be up), then idles. The benchmark reads the server's memory exactly as
// the coordinator's.

// plainStats is what plain-server serves as JSON at GET /stats.
type plainStats struct {
	Sessions   int64   `json:"sessions"` // sessions whose hello was answered and that are still open
	Goroutines int     `json:"goroutines"`
	HeapInuse  float64 `json:"heap_inuse"`  // bytes, as go_memstats_heap_inuse_bytes
	StackInuse float64 `json:"stack_inuse"` // bytes, as go_memstats_stack_inuse_bytes
}

// plainIdentities are the anchor's certificates, written by the benchmark
// into dir and read by both processes.
func plainIdentityPaths(dir, name string) (string, string) {
	return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
}

// writePlainIdentities makes the anchor's server and client identities.
func writePlainIdentities(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"server", "client"} {
		id, err := certs.NewIdentity("plain-" + name)
		if err != nil {
			return fmt.Errorf("plain %s identity: %w", name, err)
		}
		c, k := plainIdentityPaths(dir, name)
		if err := id.Save(c, k); err != nil {
			return fmt.Errorf("plain %s identity: %w", name, err)
		}
	}
	return nil
}

func loadPlainIdentities(dir string) (srv, cli *certs.Identity, err error) {
	if srv, err = certs.LoadIdentity(plainIdentityPaths(dir, "server")); err != nil {
		return nil, nil, err
	}
	if cli, err = certs.LoadIdentity(plainIdentityPaths(dir, "client")); err != nil {
		return nil, nil, err
	}
	return srv, cli, nil
}

// plainServerCmd is the hidden plain-server subcommand: it serves sessions
// on --listen and its counters on --status until interrupted.
func plainServerCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("plain-server", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder holding server.crt/key and client.crt/key (written by the benchmark)")
	listen := fs.String("listen", "127.0.0.1:0", "address to serve sessions on")
	status := fs.String("status", "", "loopback host:port to serve GET /stats on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srvID, cliID, err := loadPlainIdentities(*dir)
	if err != nil {
		return fmt.Errorf("plain-server: %w", err)
	}
	cfg := protocol.ServerTLS{
		Certificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &srvID.Certificate, nil },
		MinVersion:  tls.VersionTLS13,
		VerifyClient: func(t string) error {
			if t != cliID.Thumbprint {
				return certs.ErrUntrusted
			}
			return nil
		},
	}.Config()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("plain-server: %w", err)
	}
	defer ln.Close()
	var sessions atomic.Int64
	if *status != "" {
		sl, err := net.Listen("tcp", *status)
		if err != nil {
			return fmt.Errorf("plain-server: --status: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(plainStats{
				Sessions: sessions.Load(), Goroutines: runtime.NumGoroutine(),
				HeapInuse: float64(ms.HeapInuse), StackInuse: float64(ms.StackInuse),
			})
		})
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(sl)
		defer hs.Close()
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("plain-server: accept: %w", err)
		}
		wg.Go(func() { servePlain(ctx, c, cfg, &sessions) })
	}
}

// servePlain runs one session: handshake, then a loop accepting streams,
// each answered on a goroutine of its own.
func servePlain(ctx context.Context, c net.Conn, cfg *tls.Config, sessions *atomic.Int64) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	tc := tls.Server(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	sess, err := yamux.Server(tc, yamux.DefaultConfig())
	if err != nil {
		tc.Close()
		return
	}
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	defer sess.Close()
	counted := false
	defer func() {
		if counted {
			sessions.Add(-1)
		}
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		// One hello per session; the session counts once it was answered.
		buf := make([]byte, 64)
		n, err := st.Read(buf)
		if err == nil {
			_, err = st.Write(buf[:n])
		}
		st.Close()
		if err == nil && !counted {
			counted = true
			sessions.Add(1)
		}
	}
}

// plainClientsCmd is the hidden plain-clients subcommand: it holds --n
// sessions to --server until interrupted.
func plainClientsCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("plain-clients", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder holding the identities (see plain-server)")
	server := fs.String("server", "", "host:port of plain-server")
	n := fs.Int("n", 0, "sessions to hold")
	conc := fs.Int("concurrency", 64, "handshakes in flight at most")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srvID, cliID, err := loadPlainIdentities(*dir)
	if err != nil {
		return fmt.Errorf("plain-clients: %w", err)
	}
	cfg := protocol.ClientTLS{Identity: cliID, Pins: certs.NewPins(srvID.Thumbprint), Hint: srvID.Thumbprint, MinVersion: tls.VersionTLS13}.Config()
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	defer wg.Wait()
	for range *n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		wg.Go(func() {
			released := false
			release := func() {
				if !released {
					released = true
					<-sem
				}
			}
			defer release()
			for ctx.Err() == nil {
				if err := holdPlain(ctx, *server, cfg, release); err != nil && ctx.Err() == nil {
					fmt.Fprintln(os.Stderr, "plain client:", err)
					sleep(ctx, time.Second)
				}
			}
		})
	}
	<-ctx.Done()
	return nil
}

// holdPlain dials one session, says hello, calls up once the answer came
// back, and holds the session until ctx ends or the session does.
func holdPlain(ctx context.Context, addr string, cfg *tls.Config, up func()) error {
	d := tls.Dialer{Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := d.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	sess, err := yamux.Client(c, yamux.DefaultConfig())
	if err != nil {
		c.Close()
		return fmt.Errorf("yamux: %w", err)
	}
	defer sess.Close()
	st, err := sess.OpenStream()
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	st.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := st.Write([]byte("hello")); err != nil {
		st.Close()
		return fmt.Errorf("hello: %w", err)
	}
	_, err = io.ReadFull(st, make([]byte, 5))
	st.Close()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	up()
	select {
	case <-ctx.Done():
	case <-sess.CloseChan():
		return errors.New("session closed")
	}
	return nil
}

// measureAnchor measures the plain server's memory per idle session for n
// sessions, read as the coordinator's is: RSS (VmRSS) 2 s after start and
// again b.idle after the last session is up.
func (b *bench) measureAnchor(ctx context.Context, n int) (a anchorResult, err error) {
	dir := filepath.Join(b.dir, "plain")
	if err := writePlainIdentities(dir); err != nil {
		return a, err
	}
	port, err := freePort()
	if err != nil {
		return a, err
	}
	statusPort, err := freePort()
	if err != nil {
		return a, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	statusAddr := fmt.Sprintf("127.0.0.1:%d", statusPort)
	// The coordinator's GC settings.
	srv, err := startProc(ctx, filepath.Join(b.dir, fmt.Sprintf("plain-server-%d.log", n)), b.selfBin, b.gcEnv,
		"plain-server", "--dir", dir, "--listen", addr, "--status", statusAddr)
	if err != nil {
		return a, err
	}
	defer srv.stop(30 * time.Second)
	stats := func() (plainStats, error) {
		var st plainStats
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+statusAddr+"/stats", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return st, err
		}
		defer resp.Body.Close()
		return st, json.NewDecoder(resp.Body).Decode(&st)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := stats(); err == nil {
			break
		}
		if srv.exited() || time.Now().After(deadline) {
			return a, fmt.Errorf("plain-server did not start; see %s", srv.logPath)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return a, err
		}
	}
	if err := sleep(ctx, 2*time.Second); err != nil {
		return a, err
	}
	st0, err := stats()
	if err != nil {
		return a, err
	}
	a.rssBefore, _ = rss(srv.pid())
	a.heapBefore, a.stackBefore, a.gorBefore = st0.HeapInuse, st0.StackInuse, float64(st0.Goroutines)

	cli, err := startProc(ctx, filepath.Join(b.dir, fmt.Sprintf("plain-clients-%d.log", n)), b.selfBin, nil,
		"plain-clients", "--dir", dir, "--server", addr, "--n", strconv.Itoa(n))
	if err != nil {
		return a, err
	}
	defer cli.stop(time.Minute)
	t0 := time.Now()
	deadline = time.Now().Add(b.timeout)
	for {
		st, err := stats()
		if err == nil && st.Sessions >= int64(n) {
			break
		}
		if srv.exited() || cli.exited() {
			return a, fmt.Errorf("plain-server or plain-clients exited; see %s", cli.logPath)
		}
		if time.Now().After(deadline) {
			return a, fmt.Errorf("%d of %d plain sessions up after %s", st.Sessions, n, b.timeout)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return a, err
		}
	}
	a.connect = time.Since(t0)
	if err := sleep(ctx, b.idle); err != nil {
		return a, err
	}
	st1, err := stats()
	if err != nil {
		return a, err
	}
	a.rssAfter, _ = rss(srv.pid())
	a.heapAfter, a.stackAfter, a.gorAfter = st1.HeapInuse, st1.StackInuse, float64(st1.Goroutines)
	b.logf("anchor: %d plain sessions up in %s; RSS %.1f KiB per session", n, a.connect.Round(time.Millisecond),
		float64(a.rssAfter-a.rssBefore)/1024/float64(n))
	return a, nil
}

// anchorResult is the plain server's memory for one fleet size.
type anchorResult struct {
	rssBefore, rssAfter     int64
	heapBefore, heapAfter   float64
	stackBefore, stackAfter float64
	gorBefore, gorAfter     float64
	connect                 time.Duration
}
