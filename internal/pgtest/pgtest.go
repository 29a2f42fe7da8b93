// Package pgtest runs a throwaway PostgreSQL cluster for tests.
//
// A test binary starts at most one cluster (Shared, from TestMain), in a
// temporary folder, listening on 127.0.0.1 on a free port and on a Unix
// socket in that folder, with trust authentication; each test gets a fresh
// database in it (Cluster.NewDatabase). The cluster is stopped and its
// folder removed when TestMain calls Shared.Stop, or runs the tests with
// Shared.Main. Should the test binary die first (a panic, a timeout),
// PostgreSQL dies with it on Linux, and the next Start removes folders
// whose test binary is gone.
//
// The server binaries come from PATH or Debian's /usr/lib/postgresql/*/bin.
// Without them tests are skipped with a message saying how to install
// them, unless the environment variable CI is set: there they must run, so
// their absence fails the tests.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotInstalled means the PostgreSQL server binaries were not found.
var ErrNotInstalled = errors.New("PostgreSQL server binaries (initdb, postgres) not found in PATH or /usr/lib/postgresql/*/bin; " +
	"install them with scripts/deps.sh (Debian: apt-get install postgresql)")

// Superuser is the name of the cluster's superuser, whatever the OS user.
const Superuser = "postgres"

// dirPrefix names the cluster folders in the temporary directory, so that
// Start can recognise those left behind by a test binary that died.
const dirPrefix = "tendril-pgtest-"

// ownerFile in a cluster folder holds the PID of the test binary that owns
// it.
const ownerFile = "owner.pid"

// startTimeout bounds initdb plus the server's start; a loaded two-core
// CI machine takes a few seconds.
const startTimeout = 2 * time.Minute

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	dir   string // the temporary folder: data/, the socket, the log
	port  int
	bin   string        // the folder of the server binaries, for Up
	run   *account      // who runs the server, for Up
	admin *pgxpool.Pool // to the "postgres" database, for CREATE DATABASE

	// mu guards the server process, which Down and Up replace.
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the server process has exited
	down   bool

	seq      atomic.Int64
	stopOnce sync.Once
	stopErr  error
}

// Start creates and starts a cluster. The error wraps ErrNotInstalled when
// the binaries are missing.
func Start(ctx context.Context) (*Cluster, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	run, err := runAs()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	removeStale()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c, err := start(ctx, bin, dir, run)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres in %s: %w", dir, err)
	}
	return c, nil
}

func start(ctx context.Context, bin string, dir string, run *account) (*Cluster, error) {
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := run.own(dir); err != nil {
		return nil, err
	}
	if err := initdb(ctx, bin, dir, run); err != nil {
		return nil, err
	}
	// The free port can be taken between choosing it and the server
	// binding it; a few tries make that harmless.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		c, err := serve(ctx, bin, dir, port, run)
		if err == nil {
			return c, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, lastErr
}

// debianRoot is where Debian installs each major version's binaries.
const debianRoot = "/usr/lib/postgresql"

// findBinaries returns the folder holding initdb and postgres.
func findBinaries() (string, error) { return findBinariesIn(debianRoot) }

func findBinariesIn(debianRoot string) (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := exec.LookPath(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	// Debian keeps them out of PATH, one folder per major version; the
	// newest is the one to test with.
	dirs, _ := filepath.Glob(filepath.Join(debianRoot, "*", "bin"))
	slices.SortFunc(dirs, func(a, b string) int { return majorOf(b) - majorOf(a) })
	for _, d := range dirs {
		_, err1 := os.Stat(filepath.Join(d, "initdb"))
		_, err2 := os.Stat(filepath.Join(d, "postgres"))
		if err1 == nil && err2 == nil {
			return d, nil
		}
	}
	return "", ErrNotInstalled
}

// majorOf reads the version out of /usr/lib/postgresql/<version>/bin.
func majorOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// account is who runs the server: PostgreSQL refuses to run as root, so
// a test run as root runs it as the postgres user.
type account struct {
	name     string
	uid, gid int // -1 for the current user
}

func runAs() (*account, error) {
	if runtime.GOOS == "windows" || os.Geteuid() != 0 {
		return &account{uid: -1, gid: -1}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root: need a postgres user to run it as (Debian's postgresql package creates one): %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user postgres has uid %q and gid %q", u.Uid, u.Gid)
	}
	return &account{name: "postgres", uid: uid, gid: gid}, nil
}

// own gives dir to the account, so that the server can write in it.
func (a *account) own(dir string) error {
	if a.uid < 0 {
		return nil
	}
	return os.Chown(dir, a.uid, a.gid)
}

// command runs a server binary as the account, killed if ctx ends first.
func (a *account) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return a.setup(exec.CommandContext(ctx, name, args...))
}

func (a *account) setup(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = sysProcAttr(a.uid, a.gid)
	// Locale settings of the caller must not leak into initdb's choice of
	// defaults; messages in English keep the errors below recognisable.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C", "LC_MESSAGES=C")
	if a.name != "" {
		cmd.Env = append(cmd.Env, "HOME="+os.TempDir(), "USER="+a.name)
	}
	return cmd
}

func initdb(ctx context.Context, bin, dir string, run *account) error {
	data := filepath.Join(dir, "data")
	base := []string{"-D", data, "-U", Superuser, "--auth=trust", "--encoding=UTF8", "--no-sync"}
	// Where ICU is available the databases get a linguistic default
	// collation, as an operator's often have, so that code relying on
	// bytewise ordering without asking for it fails here first.
	attempts := [][]string{
		append(slices.Clone(base), "--locale-provider=icu", "--icu-locale=en-US", "--locale=C.UTF-8"),
		append(slices.Clone(base), "--locale=C"),
	}
	var errs []error
	for _, args := range attempts {
		out, err := run.command(ctx, filepath.Join(bin, "initdb"), args...).CombinedOutput()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("initdb %s: %w: %s", strings.Join(args, " "), err, lastLines(string(out), 5)))
		os.RemoveAll(data)
	}
	return errors.Join(errs...)
}

var errPortTaken = errors.New("port taken")

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serve starts the server on port and waits until it accepts connections.
func serve(ctx context.Context, bin, dir string, port int, run *account) (*Cluster, error) {
	c := &Cluster{dir: dir, port: port, bin: bin, run: run}
	if err := c.launch(ctx); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(c.URL("postgres"))
	if err != nil {
		c.kill()
		return nil, err
	}
	cfg.MaxConns = 4
	if c.admin, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
		c.kill()
		return nil, err
	}
	return c, nil
}

// launch starts the server process on c's folder and port and waits
// until it accepts connections. The caller holds c.mu or owns c alone.
func (c *Cluster) launch(ctx context.Context) error {
	logPath := filepath.Join(c.dir, fmt.Sprintf("postgres-%d.log", c.port))
	// Appended to: the server Up starts writes after the one Down stopped.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	// Durability is worthless in a throwaway cluster and costs seconds of
	// fsync per test; nothing here is kept.
	// Not tied to ctx, which only bounds the start: the server runs until
	// Stop.
	cmd := c.run.setup(exec.Command(filepath.Join(c.bin, "postgres"),
		"-D", filepath.Join(c.dir, "data"),
		"-p", strconv.Itoa(c.port),
		"-k", c.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning",
	))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The server is started directly, not through pg_ctl, so that it stays
	// this process's child: on Linux it then dies with the test binary
	// (see sysProcAttr) instead of outliving a crashed test run.
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// Linux sends the parent-death signal when the thread that started
		// the child exits, not the process; a locked thread lives until
		// this goroutine returns, after the server has exited.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return err
	}
	c.cmd, c.exited = cmd, exited
	if err := c.waitReady(ctx); err != nil {
		c.kill()
		log, _ := os.ReadFile(logPath)
		if strings.Contains(string(log), "could not bind") || strings.Contains(string(log), "Address already in use") {
			return fmt.Errorf("%w: %d", errPortTaken, c.port)
		}
		return fmt.Errorf("%w; server log:\n%s", err, lastLines(string(log), 20))
	}
	return nil
}

// waitReady polls until the server accepts a connection.
func (c *Cluster) waitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited while starting: %v", c.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections: %w (last error: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Down stops the server as a database outage would, keeping its folder,
// its databases and its port: clients are disconnected and new
// connections are refused until Up. It does nothing to a cluster already
// down, and works on a Shared one too (Stop stops it either way).
func (c *Cluster) Down() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return nil
	}
	if err := c.kill(); err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	c.down = true
	return nil
}

// Up starts the server Down stopped again, on the same folder and port,
// and waits until it accepts connections. It does nothing to a running
// cluster.
func (c *Cluster) Up(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.down {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := c.launch(ctx); err != nil {
		return fmt.Errorf("start postgres again on port %d: %w", c.port, err)
	}
	// The admin pool's connections died with the old server: a database
	// created or dropped next would meet one of them.
	c.admin.Reset()
	c.down = false
	return nil
}

// URL is the connection URL of database in the cluster, over TCP.
func (c *Cluster) URL(database string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.port, database)
}

// Port is the TCP port the cluster listens on.
func (c *Cluster) Port() int { return c.port }

// Dir is the cluster's temporary folder, which also holds its Unix socket.
func (c *Cluster) Dir() string { return c.dir }

// CreateDatabase creates an empty database and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	if _, err := c.admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.URL(name), nil
}

// DropDatabase removes a database, disconnecting whoever still uses it.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	if _, err := c.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// NewDatabase creates a database for the test, named after it, dropped
// when the test ends, and returns its URL.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	name = fmt.Sprintf("t%d_%s", c.seq.Add(1), name)
	if len(name) > 63 { // PostgreSQL's limit on names
		name = name[:63]
	}
	url, err := c.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.DropDatabase(context.Background(), name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return url
}

// Stop shuts the server down and removes its folder. It is idempotent.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.admin != nil {
			c.admin.Close()
		}
		c.mu.Lock()
		if !c.down {
			c.stopErr = c.kill()
		}
		c.mu.Unlock()
		if err := os.RemoveAll(c.dir); err != nil {
			c.stopErr = errors.Join(c.stopErr, err)
		}
	})
	return c.stopErr
}

// kill asks for a fast shutdown and, failing that, kills the server. The
// caller holds c.mu or owns c alone.
func (c *Cluster) kill() error {
	if err := interrupt(c.cmd.Process); err != nil {
		c.cmd.Process.Kill()
	}
	select {
	case <-c.exited:
		return nil
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
		return errors.New("postgres did not shut down within 30s and was killed")
	}
}

// Shared is a cluster for a whole test binary, started by the first test
// that asks for it. Declare one in the package and stop it in TestMain,
// with Main or by calling Stop after m.Run:
//
//	var pg pgtest.Shared
//
//	func TestMain(m *testing.M) { pg.Main(m, true) }
type Shared struct {
	once sync.Once
	mu   sync.Mutex
	c    *Cluster
	err  error
}

// Cluster returns the running cluster, starting it on first use. Without
// the PostgreSQL binaries it skips the test, or, when CI is set, fails
// it; any other failure to start fails the test.
func (s *Shared) Cluster(t testing.TB) *Cluster {
	t.Helper()
	s.once.Do(func() {
		c, err := Start(context.Background())
		s.mu.Lock()
		s.c, s.err = c, err
		s.mu.Unlock()
	})
	if s.err != nil {
		if errors.Is(s.err, ErrNotInstalled) && os.Getenv("CI") == "" {
			t.Skip(s.err)
		}
		t.Fatal(s.err)
	}
	return s.c
}

// Stop stops the cluster if one was started.
func (s *Shared) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil
	}
	return s.c.Stop()
}

// removeStale removes cluster folders whose test binary has exited
// without stopping its cluster.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // being created, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || alive(pid) || serverRunning(d) {
			continue
		}
		os.RemoveAll(d)
	}
}

// serverRunning reports whether a server still runs in the cluster folder
// d (one that outlived its test binary where nothing kills it with it).
func serverRunning(d string) bool {
	b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	return err == nil && alive(pid)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
