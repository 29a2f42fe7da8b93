//go:build !windows

package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/agent/upgrade"
)

// nobody is a uid no test runs as: a file chowned to it is "owned by
// another user".
const nobody = 65534

// TestUnsafeHomeRefused makes a registered home unsafe in one way per
// case and checks that the agent refuses to start, naming the path and
// the command that fixes it, and that register refuses the home too.
func TestUnsafeHomeRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making a file owned by another user needs root")
	}
	uid := os.Geteuid()
	c := newTestCoordinator(t)
	chmod := func(rel string, m os.FileMode) func(t *testing.T, home string) {
		return func(t *testing.T, home string) {
			if err := os.Chmod(filepath.Join(home, rel), m); err != nil {
				t.Fatal(err)
			}
		}
	}
	chown := func(rel string) func(t *testing.T, home string) {
		return func(t *testing.T, home string) {
			if err := os.Chown(filepath.Join(home, rel), nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		rel    string // the unsafe path, relative to the home
		break_ func(t *testing.T, home string)
		want   string // the problem, after the path
		fix    string // the command, before the path
	}{
		{"home 0777", ".", chmod(".", 0o777), "is writable by its group and others (mode 0777)", "chmod 700"},
		{"home 1777", ".", chmod(".", 0o777|os.ModeSticky), "is writable by its group and others (mode 1777)", "chmod 700"},
		{"home 0775", ".", chmod(".", 0o775), "is writable by its group (mode 0775)", "chmod 700"},
		{"home 0770", ".", chmod(".", 0o770), "is writable by its group (mode 0770)", "chmod 700"},
		{"home 0757", ".", chmod(".", 0o757), "is writable by others (mode 0757)", "chmod 700"},
		{"home of another user", ".", chown("."), fmt.Sprintf("is owned by uid %d, not this agent's uid %d", nobody, uid), fmt.Sprintf("chown -R %d", uid)},
		{"agent.json 0666", stateFile, chmod(stateFile, 0o666), "is writable by its group and others (mode 0666)", "chmod 600"},
		{"agent.json 0620", stateFile, chmod(stateFile, 0o620), "is writable by its group (mode 0620)", "chmod 600"},
		{"agent.json of another user", stateFile, chown(stateFile), fmt.Sprintf("is owned by uid %d, not this agent's uid %d", nobody, uid), fmt.Sprintf("chown %d", uid)},
		{"certs 0777", certsDir, chmod(certsDir, 0o777), "is writable by its group and others (mode 0777)", "chmod 700"},
		{"private key 0644", "certs/agent.key", chmod("certs/agent.key", 0o644), "is readable by its group and others (mode 0644)", "chmod 600"},
		{"private key of another user", "certs/agent.key", chown("certs/agent.key"), fmt.Sprintf("is owned by uid %d, not this agent's uid %d", nobody, uid), fmt.Sprintf("chown %d", uid)},
		{"certificate 0666", "certs/agent.crt", chmod("certs/agent.crt", 0o666), "is writable by its group and others (mode 0666)", "chmod 600"},
		{"Calamari 0777", calamariDir, chmod(calamariDir, 0o777), "is writable by its group and others (mode 0777)", "chmod go-w"},
		{"upgrade state 0666", "Upgrade/state.json", func(t *testing.T, home string) {
			if err := upgrade.Save(home, upgrade.State{Phase: upgrade.PhaseCommitted}); err != nil {
				t.Fatal(err)
			}
			chmod("Upgrade/state.json", 0o666)(t, home)
		}, "is writable by its group and others (mode 0666)", "chmod 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := registered(t, c)
			tt.break_(t, home)
			path := filepath.Clean(filepath.Join(home, tt.rel))
			want := path + " " + tt.want + ": run " + tt.fix + " " + path
			_, err := New(Config{Home: home})
			if !errors.Is(err, ErrUnsafeHome) || !strings.Contains(err.Error(), want) {
				t.Fatalf("New: got %v, want ErrUnsafeHome saying %q", err, want)
			}
			_, err = register(t, c, home, func(rc *RegisterConfig) { rc.Force = true })
			if !errors.Is(err, ErrUnsafeHome) || !strings.Contains(err.Error(), want) {
				t.Fatalf("register --force: got %v, want ErrUnsafeHome saying %q", err, want)
			}
			if err := CheckHome(home); !errors.Is(err, ErrUnsafeHome) {
				t.Fatalf("CheckHome: got %v, want ErrUnsafeHome", err)
			}
		})
	}
}

// TestSafeHomesAccepted checks what is not a problem: group or world
// read (not write) on the home, and root owning a file, as ssh allows.
func TestSafeHomesAccepted(t *testing.T) {
	c := newTestCoordinator(t)
	tests := []struct {
		name string
		mod  func(t *testing.T, home string) error
	}{
		{"home 0700", func(*testing.T, string) error { return nil }},
		{"home 0750", func(_ *testing.T, home string) error { return os.Chmod(home, 0o750) }},
		{"home 0755", func(_ *testing.T, home string) error { return os.Chmod(home, 0o755) }},
		{"agent.json 0644", func(_ *testing.T, home string) error { return os.Chmod(filepath.Join(home, stateFile), 0o644) }},
		{"agent.json owned by root", func(t *testing.T, home string) error {
			if os.Geteuid() != 0 {
				t.Skip("chown to root needs root")
			}
			return os.Chown(filepath.Join(home, stateFile), 0, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := registered(t, c)
			if err := tt.mod(t, home); err != nil {
				t.Fatal(err)
			}
			if _, err := New(Config{Home: home}); err != nil {
				t.Fatalf("New: got %v, want the agent to start", err)
			}
		})
	}
}

// TestUnsafeBinaryRefused checks the binary an upgrade replaces: another
// user who can write it, or its folder, chooses what the agent becomes.
func TestUnsafeBinaryRefused(t *testing.T) {
	c := newTestCoordinator(t)
	tests := []struct {
		name     string
		dirMode  os.FileMode
		fileMode os.FileMode
		unsafe   string // "folder", "binary" or ""
	}{
		{"safe", 0o755, 0o755, ""},
		{"binary 0777", 0o755, 0o777, "binary"},
		{"binary 0775", 0o755, 0o775, "binary"},
		{"folder 0777", 0o777, 0o755, "folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := registered(t, c)
			dir := filepath.Join(t.TempDir(), "bin")
			exe := filepath.Join(dir, "tendril-agent")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			// Chmod, not the modes above at creation: the umask would
			// take the write bits away.
			if err := os.Chmod(exe, tt.fileMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.dirMode); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{Home: home, exe: exe})
			switch tt.unsafe {
			case "":
				if err != nil {
					t.Fatalf("got %v, want the agent to start", err)
				}
			case "binary":
				if want := "agent binary " + exe + " is writable by"; !errors.Is(err, ErrUnsafeHome) || !strings.Contains(err.Error(), want) {
					t.Fatalf("got %v, want ErrUnsafeHome saying %q", err, want)
				}
			case "folder":
				if want := "agent binary's folder " + dir + " is writable by its group and others (mode 0777)"; !errors.Is(err, ErrUnsafeHome) || !strings.Contains(err.Error(), want) {
					t.Fatalf("got %v, want ErrUnsafeHome saying %q", err, want)
				}
			}
		})
	}
}

// TestRegisterMakesPrivateHome checks that register creates the home
// 0700 whatever the umask allows, and refuses an existing home that is
// too open before it sends anything to the coordinator.
func TestRegisterMakesPrivateHome(t *testing.T) {
	c := newTestCoordinator(t)
	home := filepath.Join(t.TempDir(), "new", "home")
	if _, err := register(t, c, home, nil); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, home); m != 0o700 {
		t.Errorf("home: got mode %o, want 700", m)
	}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := c.count(func() int { return len(c.registers) })
	_, err := Register(ctx, RegisterConfig{Home: open, Servers: []string{c.addr()}, ServerThumbprint: c.id.Thumbprint, Token: "t", Name: "open"})
	if want := "run chmod 700 " + open; !errors.Is(err, ErrUnsafeHome) || !strings.Contains(err.Error(), want) {
		t.Fatalf("register into a 0777 home: got %v, want ErrUnsafeHome saying %q", err, want)
	}
	if n := c.count(func() int { return len(c.registers) }); n != before {
		t.Errorf("coordinator saw %d registrations, want %d: the token must not leave an unsafe home", n, before)
	}
	if _, err := os.Stat(filepath.Join(open, certsDir)); err == nil {
		t.Error("register made folders in the unsafe home, want it untouched")
	}
}
