// Package servertest is test support shared by the tests that drive a
// whole coordinator from outside package server: the tendril-server
// command's (cmd/tendril-server/cli, in the test process) and the
// end-to-end ones (e2e, as real processes). It holds what both need around
// the coordinator: a Calamari bundle agents can run scripts with, agents
// enrolled and run in the test process, stand-ins for agent packages
// stamped with a version (AgentBinary), a data folder copied for a second
// high-availability node, free loopback ports, and waiting for a condition
// with a deadline.
//
// Only tests import it. It does not import package server, so that
// server's own tests could use it without an import cycle.
package servertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/bundle"
	"github.com/tendrildeploy/tendril/protocol"
)

// Calamari stands in for the Calamari program: "run-script --inline
// SCRIPT" runs SCRIPT with /bin/sh, as the real one runs its scripts; any
// other command fails with exit code 2.
const Calamari = `#!/bin/sh
if [ "$1" = "run-script" ] && [ "$2" = "--inline" ]; then
	exec /bin/sh -c "$3"
fi
echo "calamari: unknown command $1" >&2
exit 2
`

// CalamariBundle packs a Calamari bundle of version for this platform,
// whose entry point is the Calamari script, into a file named
// calamari-VERSION.tar.gz and returns its path. filler bytes of random,
// so incompressible, data are added to the bundle, to make sending it take
// a moment; 0 adds none. The script needs /bin/sh: tests using it skip on
// Windows.
func CalamariBundle(t testing.TB, version string, filler int) string {
	t.Helper()
	src := t.TempDir()
	plat := runtime.GOOS + "-" + runtime.GOARCH
	if err := os.MkdirAll(filepath.Join(src, plat), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, plat, "calamari"), []byte(Calamari), 0o755); err != nil {
		t.Fatal(err)
	}
	if filler > 0 {
		pad := make([]byte, filler)
		rand.Read(pad)
		if err := os.WriteFile(filepath.Join(src, plat, "filler"), pad, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := bundle.Pack(context.Background(), &buf, "calamari", version, src,
		map[string]string{runtime.GOOS + "/" + runtime.GOARCH: plat + "/calamari"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "calamari-"+version+".tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Agent describes an agent for StartAgent.
type Agent struct {
	// Name is the agent's name on the coordinator.
	Name string
	// Join is the join string "token create" printed, parsed: its token
	// enrolls the agent and its thumbprint pins the coordinator.
	Join protocol.Join
	// Servers are the coordinator nodes to try, in order; nil means
	// Join.Servers.
	Servers []string
	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts (agent.Config); tests that kill coordinators choose them.
	MinBackoff, MaxBackoff time.Duration
}

// agentVersion is the version the test agents report: any version the
// coordinator does not upgrade by itself.
const agentVersion = "1.2.3"

// StartAgent registers a and runs it in the test process, in a home folder
// of its own, until the test ends.
func StartAgent(t testing.TB, a Agent) {
	t.Helper()
	servers := a.Servers
	if servers == nil {
		servers = a.Join.Servers
	}
	home := t.TempDir()
	if _, err := agent.Register(context.Background(), agent.RegisterConfig{Home: home, Name: a.Name, Version: agentVersion,
		Servers: servers, ServerThumbprint: a.Join.Thumbprint, Token: a.Join.Token}); err != nil {
		t.Fatalf("register agent %s: %v", a.Name, err)
	}
	ag, err := agent.New(agent.Config{Home: home, Version: agentVersion, MinBackoff: a.MinBackoff, MaxBackoff: a.MaxBackoff})
	if err != nil {
		t.Fatalf("agent %s: %v", a.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// CopyDir copies the folder from, with its files' permissions, to the
// folder to: what an operator does to a data folder to start a second
// coordinator node on the same database.
func CopyDir(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), info.Mode().Perm())
		}
		return copyFile(path, filepath.Join(to, rel), info.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", from, to, err)
	}
}

func copyFile(from, to string, perm os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// FreeAddr returns a loopback host:port nothing listens on now, for a
// listener the test cannot ask to choose its own port (a separate process,
// or one that must restart on the same address). Another process may take
// it first; the tests accept that small chance.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// maxPoll is the longest wait between two checks of WaitFor's condition:
// conditions often run a command or an API call, so they are not checked
// more often than that once they have been false for a while.
const maxPoll = 100 * time.Millisecond

// WaitFor checks cond until it is true and fails the test if it is still
// false after within; what says what was waited for. Checks start 10ms
// apart, so what is nearly true already is not waited for long.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	poll := 10 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(poll)
		poll = min(2*poll, maxPoll)
	}
}
