package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sshdPath is where Debian's openssh-server installs the daemon
// (scripts/bench-deps.sh installs it).
const sshdPath = "/usr/sbin/sshd"

// sshdConfig is what the benchmark's own sshd configuration file says:
// a loopback-only daemon that accepts exactly one throwaway client key.
type sshdConfig struct {
	Port           int
	HostKey        string
	AuthorizedKeys string
	PidFile        string
}

// writeSSHDConfig writes an sshd_config for c. Every path is absolute, so
// nothing of the machine's own /etc/ssh is read; sftp is served
// in-process because OpenSSH 9's scp speaks the SFTP protocol. An
// authorized key may set SHLVL (and nothing else) for its sessions: see
// sshServer.cleanKey.
func writeSSHDConfig(w io.Writer, c sshdConfig) error {
	for _, p := range []string{c.HostKey, c.AuthorizedKeys, c.PidFile} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("sshd config: %q is not an absolute path", p)
		}
		if strings.ContainsAny(p, " \t\n\"%") {
			return fmt.Errorf("sshd config: path %q has characters sshd_config would read otherwise", p)
		}
	}
	if c.Port <= 0 || c.Port > 65535 {
		return fmt.Errorf("sshd config: port %d out of range", c.Port)
	}
	_, err := fmt.Fprintf(w, `# Written by tendril-fleet bench-transfer; removed when it ends.
Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
PermitUserEnvironment SHLVL
Subsystem sftp internal-sftp
`, c.Port, c.HostKey, c.PidFile, c.AuthorizedKeys)
	return err
}

// sshServer is an sshd started for the benchmark, and the client options
// that reach it.
//
// It authorizes two client keys. Sessions of shellKey run the user's
// shell exactly as the machine has it: Debian's bash, started by sshd,
// reads ~/.bashrc even for `bash -c true`, and a developer's ~/.bashrc can
// cost far more than SSH itself (root's here runs `pyenv init`). Sessions
// of cleanKey get SHLVL=1 from their authorized_keys line, so bash counts
// itself a nested shell and skips ~/.bashrc: what is left is SSH's own
// cost, comparable with the /bin/sh -c that a Calamari run-script starts.
type sshServer struct {
	dir                string
	port               int
	user               string
	shellKey, cleanKey string
	// controlDir holds the multiplexing sockets: a short path of its own,
	// since a Unix socket path is limited to about 100 bytes.
	controlDir string
	proc       *proc
}

// startSSHD generates a throwaway host key and client key in dir, writes
// the configuration, and starts sshd in the foreground (-D -e, its log in
// dir/sshd.log) on a free loopback port. It returns once sshd answers
// with its banner.
func startSSHD(ctx context.Context, dir string) (*sshServer, error) {
	if _, err := os.Stat(sshdPath); err != nil {
		return nil, fmt.Errorf("start sshd: %w (run scripts/bench-deps.sh)", err)
	}
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	// sshd refuses to start without its privilege separation folder, which
	// a machine whose sshd service never ran does not have.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	s := &sshServer{dir: dir, user: u.Username,
		shellKey: filepath.Join(dir, "client_shell_ed25519"), cleanKey: filepath.Join(dir, "client_clean_ed25519")}
	hostKey := filepath.Join(dir, "host_ed25519")
	for _, k := range []string{hostKey, s.shellKey, s.cleanKey} {
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("start sshd: ssh-keygen %s: %v: %s", k, err, out)
		}
	}
	shellPub, err := os.ReadFile(s.shellKey + ".pub")
	if err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	cleanPub, err := os.ReadFile(s.cleanKey + ".pub")
	if err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	lines := string(shellPub) + `environment="SHLVL=1" ` + string(cleanPub)
	if err := os.WriteFile(authorized, []byte(lines), 0o600); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	if s.port, err = freePort(); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	cfgPath := filepath.Join(dir, "sshd_config")
	f, err := os.Create(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	err = writeSSHDConfig(f, sshdConfig{Port: s.port, HostKey: hostKey, AuthorizedKeys: authorized, PidFile: filepath.Join(dir, "sshd.pid")})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if s.controlDir, err = os.MkdirTemp("", "tfssh"); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	if s.proc, err = startProc(ctx, filepath.Join(dir, "sshd.log"), sshdPath, nil, "-D", "-e", "-f", cfgPath); err != nil {
		os.RemoveAll(s.controlDir)
		return nil, err
	}
	if err := s.waitBanner(ctx, 10*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitBanner polls the port until sshd greets with its SSH-2.0 banner.
func (s *sshServer) waitBanner(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-2.0-") {
				return nil
			}
		}
		if s.proc.exited() {
			return fmt.Errorf("sshd exited at start; see %s", s.proc.logPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd did not greet on %s within %s; see %s", addr, within, s.proc.logPath)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// clientOptions are the options every ssh and scp call of the benchmark
// uses: no configuration file of the machine's, a throwaway key, and no
// host key bookkeeping for a host key that lives for one run.
func (s *sshServer) clientOptions(key string) []string {
	return []string{"-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-i", key}
}

// target is user@127.0.0.1.
func (s *sshServer) target() string { return s.user + "@127.0.0.1" }

// controlPath is the ControlPath of the multiplexed connection made with
// key; one per key, since a session gets its key's authorized_keys
// options.
func (s *sshServer) controlPath(key string) string {
	tag := "shell"
	if key == s.cleanKey {
		tag = "clean"
	}
	return filepath.Join(s.controlDir, tag+"-%C")
}

// sshTrueArgs is the multiplexed `ssh ... true` of figure 6, with key.
func (s *sshServer) sshTrueArgs(key string) []string {
	return append(s.clientOptions(key), "-o", "ControlMaster=auto", "-o", "ControlPath="+s.controlPath(key),
		"-o", "ControlPersist=60", "-p", strconv.Itoa(s.port), s.target(), "true")
}

// scpArgs copies src to dst on the server, on a connection of its own.
// OpenSSH 9's scp uses the sftp subsystem, served inside sshd: no shell
// runs, so the key does not matter.
func (s *sshServer) scpArgs(src, dst string) []string {
	return append(s.clientOptions(s.cleanKey), "-q", "-P", strconv.Itoa(s.port), src, s.target()+":"+dst)
}

// timeCmd runs a command and returns its wall time, from start to exit.
func timeCmd(ctx context.Context, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// Only the real error text is kept, not a live stdout: a pipe would
	// make Wait wait for the ControlPersist master that inherits it.
	errFile, err := os.CreateTemp("", "bench-cmd-*.err")
	if err != nil {
		return 0, err
	}
	defer os.Remove(errFile.Name())
	defer errFile.Close()
	cmd.Stderr = errFile
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		return took, ctx.Err()
	}
	if err != nil {
		msg, _ := os.ReadFile(errFile.Name())
		return took, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(msg)))
	}
	return took, nil
}

// stopMasters ends the multiplexed client connections that ControlPersist
// keeps in the background.
func (s *sshServer) stopMasters(ctx context.Context) {
	for _, key := range []string{s.shellKey, s.cleanKey} {
		args := append(s.clientOptions(key), "-o", "ControlPath="+s.controlPath(key), "-O", "exit", "-p", strconv.Itoa(s.port), s.target())
		exec.CommandContext(ctx, "ssh", args...).Run() // no master running is fine
	}
}

// stop ends sshd and the per-connection processes it forked (those call
// setsid, so they are found by parent PID, not by process group).
func (s *sshServer) stop() {
	if s.controlDir != "" {
		defer os.RemoveAll(s.controlDir)
	}
	if s.proc == nil || s.proc.exited() {
		return
	}
	for _, pid := range childrenOf(s.proc.pid()) {
		if p, err := os.FindProcess(pid); err == nil {
			p.Signal(syscall.SIGTERM)
		}
	}
	s.proc.stop(5 * time.Second)
}

// childrenOf lists the PIDs whose parent is pid (Linux /proc).
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state, ppid, ...
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}
