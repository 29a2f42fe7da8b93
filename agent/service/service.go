// Package service installs and controls the agent as an operating system
// service (systemd or SysV init on Linux, launchd on macOS, the Service
// Control Manager on Windows) through github.com/kardianos/service, and
// runs the agent under that service manager.
//
// The unit file (systemd) and the init script (SysV) are rendered here
// rather than by kardianos's own templates, and handed to it ready-made:
// the exact text installed is then the text the tests check (systemd-analyze
// verify for the unit), and the init script gets what kardianos's lacks:
// LSB exit codes for status, a stop that waits for a graceful shutdown
// before it kills, and a pid check that a zombie or a reused pid fools not.
package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	kservice "github.com/kardianos/service"
)

// Env is the environment variable every service definition sets to the
// service's name. The agent reads it to know that a service manager runs
// it, and which one to ask for a restart: kardianos's own check
// (service.Interactive) answers "interactive" inside any container, and
// cannot tell the name.
const Env = "TENDRIL_AGENT_SERVICE"

// DefaultStopTimeout bounds a graceful stop: running tasks are told to
// stop and the session is closed before the process exits.
const DefaultStopTimeout = 30 * time.Second

// Exit codes of `service status`, as LSB init scripts use them.
const (
	ExitRunning      = 0
	ExitStopped      = 3
	ExitNotInstalled = 4
)

// Status is what a service is doing.
type Status int

// Statuses, as `service status` prints them.
const (
	StatusNotInstalled Status = iota
	StatusRunning
	StatusStopped
)

// String is the word `service status` prints.
func (s Status) String() string {
	switch s {
	case StatusRunning:
		return "running"
	case StatusStopped:
		return "stopped"
	default:
		return "not installed"
	}
}

// ExitCode is the LSB exit code for the status: 0 running, 3 stopped, 4
// not installed (LSB's "unknown", the closest it has).
func (s Status) ExitCode() int {
	switch s {
	case StatusRunning:
		return ExitRunning
	case StatusStopped:
		return ExitStopped
	default:
		return ExitNotInstalled
	}
}

// ErrNotRoot is returned when a change to the system's services is asked
// for by someone who may not make it.
var ErrNotRoot = errors.New("installing a service needs root: run with sudo")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,79}$`)

// ValidateName checks that name can be a service name on every platform:
// it becomes a file name (/etc/init.d/NAME, NAME.service) and part of a
// shell script, so only letters, digits and _ . @ - are allowed.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("service name %q: use 1 to 80 letters, digits, '_', '.', '@' or '-', starting with a letter or digit", name)
	}
	return nil
}

// DefaultName is the service name of the agent whose home is the absolute
// path home: "tendril-agent-" + the home's base name (sanitised, at most
// 24 characters) + "-" + 8 hex digits of the SHA-256 of the path. It is
// stable for a home and differs between homes, so several agents install
// side by side without naming them.
func DefaultName(home string) string {
	home = filepath.Clean(home)
	sum := sha256.Sum256([]byte(home))
	var b strings.Builder
	for _, r := range strings.ToLower(filepath.Base(home)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '-' || r == '_' || r == '.':
			b.WriteRune('-')
		}
	}
	base := strings.Trim(b.String(), "-")
	if len(base) > 24 {
		base = strings.Trim(base[:24], "-")
	}
	if base == "" {
		return "tendril-agent-" + hex.EncodeToString(sum[:4])
	}
	return "tendril-agent-" + base + "-" + hex.EncodeToString(sum[:4])
}

// Config describes one agent's service.
type Config struct {
	// Home is the agent's home folder. Required; made absolute.
	Home string
	// Name is the service name. Default: DefaultName(Home).
	Name string
	// Executable is the agent binary the service runs. Default: the
	// running executable.
	Executable string
	// StopTimeout is passed to `run --stop-timeout` and bounds the
	// init script's wait for a stop. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// Registered reports whether Home holds a registration the agent
	// would start with (registered, and safe from other local users);
	// install and start refuse the home with its error. Optional.
	Registered func() error
}

func (c *Config) validate() error {
	if c.Home == "" {
		return errors.New("service: no home folder given")
	}
	abs, err := filepath.Abs(c.Home)
	if err != nil {
		return fmt.Errorf("service: home folder %q: %w", c.Home, err)
	}
	c.Home = abs
	if c.Name == "" {
		c.Name = DefaultName(c.Home)
	}
	if err := ValidateName(c.Name); err != nil {
		return err
	}
	if c.StopTimeout < 0 {
		return fmt.Errorf("service: stop timeout %s is negative", c.StopTimeout)
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("service: find the agent binary: %w", err)
		}
		c.Executable = exe
	}
	// Resolved: the init script compares it with /proc/PID/exe.
	exe, err := filepath.Abs(c.Executable)
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return fmt.Errorf("service: agent binary %q: %w", c.Executable, err)
	}
	c.Executable = exe
	return nil
}

// Arguments are the agent's command line under the service manager.
func (c Config) Arguments() []string {
	args := []string{"run", "--home", c.Home, "--service"}
	if c.StopTimeout != DefaultStopTimeout {
		args = append(args, "--stop-timeout", c.StopTimeout.String())
	}
	return args
}

// kconfig is the kardianos configuration for c on platform (a kardianos
// platform name such as "linux-systemd" or "unix-systemv").
func (c Config) kconfig(platform string) (*kservice.Config, error) {
	kc := &kservice.Config{
		Name:             c.Name,
		DisplayName:      "Tendril agent (" + c.Name + ")",
		Description:      "Tendril deployment agent with home " + c.Home,
		Arguments:        c.Arguments(),
		Executable:       c.Executable,
		WorkingDirectory: c.Home,
		// After the network is up: the agent's first act is to connect.
		Dependencies: []string{"After=network-online.target", "Wants=network-online.target"},
		EnvVars:      map[string]string{Env: c.Name},
		Option: kservice.KeyValue{
			"Restart": "on-failure",
			// launchd: start at boot, restart when it exits.
			"RunAtLoad": true,
			"KeepAlive": true,
			// Windows: restart on failure, as systemd's Restart= does.
			"OnFailure":              "restart",
			"OnFailureDelayDuration": "5s",
		},
	}
	switch platform {
	case "linux-systemd":
		unit, err := SystemdUnit(c)
		if err != nil {
			return nil, err
		}
		kc.Option["SystemdScript"] = unit
	case "unix-systemv":
		script, err := SysVScript(c)
		if err != nil {
			return nil, err
		}
		kc.Option["SysvScript"] = script
	}
	return kc, nil
}

// Manager installs and controls one agent's service.
type Manager struct {
	cfg      Config
	platform string
	svc      kservice.Service
}

// New prepares a Manager for cfg on this machine's service manager.
func New(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	platform := kservice.ChosenSystem()
	if platform == nil {
		return nil, fmt.Errorf("service %s: %w", cfg.Name, kservice.ErrNoServiceSystemDetected)
	}
	kc, err := cfg.kconfig(platform.String())
	if err != nil {
		return nil, err
	}
	svc, err := kservice.New(noProgram{}, kc)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", cfg.Name, err)
	}
	return &Manager{cfg: cfg, platform: platform.String(), svc: svc}, nil
}

// Name is the service's name.
func (m *Manager) Name() string { return m.cfg.Name }

// Platform is the service manager kardianos chose, e.g. "unix-systemv".
func (m *Manager) Platform() string { return m.platform }

// noProgram is the Interface of a Manager, which only controls the
// service from outside; Run uses a real one.
type noProgram struct{}

func (noProgram) Start(kservice.Service) error { return nil }
func (noProgram) Stop(kservice.Service) error  { return nil }

// definitionPath is the file that says the service is installed, "" where
// kardianos is asked instead.
func (m *Manager) definitionPath() string {
	switch m.platform {
	case "unix-systemv":
		return "/etc/init.d/" + m.cfg.Name
	case "linux-systemd":
		return "/etc/systemd/system/" + m.cfg.Name + ".service"
	}
	return ""
}

// PIDFile is where the SysV init script keeps the agent's pid.
func PIDFile(name string) string { return "/var/run/" + name + ".pid" }

// Installed reports whether the service is installed.
func (m *Manager) Installed(ctx context.Context) (bool, error) {
	if p := m.definitionPath(); p != "" {
		_, err := os.Stat(p)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, fs.ErrNotExist):
			return false, nil
		default:
			return false, fmt.Errorf("service %s: %w", m.cfg.Name, err)
		}
	}
	_, err := m.svc.Status()
	if errors.Is(err, kservice.ErrNotInstalled) {
		return false, nil
	}
	return true, nil
}

// checkRoot refuses changes to the system's services by a user who may
// not make them; kardianos would fail half-way with a raw EACCES.
func checkRoot() error {
	if runtime.GOOS != "windows" && os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return nil
}

func (m *Manager) checkRegistered() error {
	if m.cfg.Registered == nil {
		return nil
	}
	return m.cfg.Registered()
}

// checkWritable makes sure the agent can write its home: the service runs
// there and logs to <home>/Logs. Root ignores permission bits, so the
// probe writes a file rather than reading modes.
func (m *Manager) checkWritable() error {
	logs := filepath.Join(m.cfg.Home, "Logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		return fmt.Errorf("home folder %s is not writable: %w", m.cfg.Home, err)
	}
	probe, err := os.CreateTemp(logs, ".write-test-*")
	if err != nil {
		return fmt.Errorf("home folder %s is not writable: %w", m.cfg.Home, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// Install installs the service (not started). It refuses, changing
// nothing, when not run as root, when the home is not registered or not
// writable, and when a service of that name is already installed.
func (m *Manager) Install(ctx context.Context) error {
	if err := checkRoot(); err != nil {
		return err
	}
	if err := m.checkRegistered(); err != nil {
		return err
	}
	if err := m.checkWritable(); err != nil {
		return err
	}
	if _, err := os.Stat(m.cfg.Executable); err != nil {
		return fmt.Errorf("install service %s: agent binary: %w", m.cfg.Name, err)
	}
	installed, err := m.Installed(ctx)
	if err != nil {
		return err
	}
	if installed {
		return fmt.Errorf("service %s is already installed", m.cfg.Name)
	}
	if err := m.svc.Install(); err != nil {
		// Half an install is worse than none: take back what was written.
		m.removeLeftovers()
		return fmt.Errorf("install service %s: %w", m.cfg.Name, err)
	}
	return nil
}

// Uninstall stops the service if it runs and removes it: the definition,
// the SysV rc links and the pid file.
func (m *Manager) Uninstall(ctx context.Context) error {
	if err := checkRoot(); err != nil {
		return err
	}
	if err := m.requireInstalled(ctx); err != nil {
		return err
	}
	if st, err := m.Status(ctx); err == nil && st == StatusRunning {
		if err := m.svc.Stop(); err != nil {
			return fmt.Errorf("uninstall service %s: stop it: %w", m.cfg.Name, err)
		}
	}
	if err := m.svc.Uninstall(); err != nil {
		return fmt.Errorf("uninstall service %s: %w", m.cfg.Name, err)
	}
	return m.removeLeftovers()
}

// removeLeftovers removes what kardianos's SysV uninstall leaves: the rc
// links it made (S50NAME, K02NAME) and the init script's pid file.
func (m *Manager) removeLeftovers() error {
	if m.platform != "unix-systemv" {
		return nil
	}
	var errs []error
	links, _ := filepath.Glob("/etc/rc?.d/[SK][0-9][0-9]" + m.cfg.Name)
	for _, l := range append(links, PIDFile(m.cfg.Name), m.definitionPath()) {
		if err := os.Remove(l); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uninstall service %s: %w", m.cfg.Name, err)
	}
	return nil
}

func (m *Manager) requireInstalled(ctx context.Context) error {
	installed, err := m.Installed(ctx)
	if err != nil {
		return err
	}
	if !installed {
		return fmt.Errorf("service %s is not installed: run \"tendril-agent service install --home %s\" first", m.cfg.Name, m.cfg.Home)
	}
	return nil
}

// Start starts the installed service; it fails with the register command
// when the home is not registered.
func (m *Manager) Start(ctx context.Context) error {
	if err := checkRoot(); err != nil {
		return errors.New("starting a service needs root: run with sudo")
	}
	if err := m.requireInstalled(ctx); err != nil {
		return err
	}
	if err := m.checkRegistered(); err != nil {
		return err
	}
	if err := m.svc.Start(); err != nil {
		return fmt.Errorf("start service %s: %w", m.cfg.Name, err)
	}
	return nil
}

// Stop stops the service gracefully (see Run).
func (m *Manager) Stop(ctx context.Context) error {
	if err := checkRoot(); err != nil {
		return errors.New("stopping a service needs root: run with sudo")
	}
	if err := m.requireInstalled(ctx); err != nil {
		return err
	}
	if err := m.svc.Stop(); err != nil {
		return fmt.Errorf("stop service %s: %w", m.cfg.Name, err)
	}
	return nil
}

// Restart stops the service if it runs and starts it.
func (m *Manager) Restart(ctx context.Context) error {
	if err := checkRoot(); err != nil {
		return errors.New("restarting a service needs root: run with sudo")
	}
	if err := m.requireInstalled(ctx); err != nil {
		return err
	}
	if err := m.checkRegistered(); err != nil {
		return err
	}
	if err := m.svc.Restart(); err != nil {
		return fmt.Errorf("restart service %s: %w", m.cfg.Name, err)
	}
	return nil
}

// Status reports whether the service is installed and running. On SysV it
// asks the init script, whose exit code (LSB) kardianos reads as an error.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	installed, err := m.Installed(ctx)
	if err != nil {
		return StatusNotInstalled, err
	}
	if !installed {
		return StatusNotInstalled, nil
	}
	if m.platform == "unix-systemv" {
		cmd := exec.CommandContext(ctx, "service", m.cfg.Name, "status")
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return StatusRunning, nil
		case errors.As(err, &ee) && ee.ExitCode() >= 1 && ee.ExitCode() <= 3:
			return StatusStopped, nil
		default:
			return StatusStopped, fmt.Errorf("status of service %s: %w", m.cfg.Name, err)
		}
	}
	st, err := m.svc.Status()
	switch {
	case errors.Is(err, kservice.ErrNotInstalled):
		return StatusNotInstalled, nil
	case st == kservice.StatusRunning:
		return StatusRunning, nil
	case err == nil || st == kservice.StatusStopped:
		return StatusStopped, nil
	default:
		// systemd's "failed" is an error to kardianos; to an operator
		// it is a stopped service.
		return StatusStopped, nil
	}
}

// RestartByName asks the service manager to start the service name again
// after its process was stopped (the upgrade watchdog's rollback): through
// the init script or systemctl, so the pid file and the unit's state stay
// true. A service that runs already is restarted.
func RestartByName(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	svc, err := kservice.New(noProgram{}, &kservice.Config{Name: name})
	if err != nil {
		return fmt.Errorf("restart service %s: %w", name, err)
	}
	if st, err := svc.Status(); err == nil && st == kservice.StatusRunning {
		if err := svc.Restart(); err != nil {
			return fmt.Errorf("restart service %s: %w", name, err)
		}
		return nil
	}
	if err := svc.Start(); err != nil {
		return fmt.Errorf("start service %s: %w", name, err)
	}
	return nil
}
