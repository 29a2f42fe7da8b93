package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/agent/service"
)

// exitCodeError ends the process with code and no message: `service
// status` reports through its exit code, as an init script does.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func serviceCommand() *cobra.Command {
	var (
		home, name  string
		stopTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Install and control the agent as an operating system service",
		Long: `Install and control the agent as an operating system service (systemd or
SysV init on Linux, launchd on macOS, the Service Control Manager on Windows).

The service name defaults to "tendril-agent-" + the home folder's name + 8 hex
digits of its path's SHA-256, so agents with different homes install side by
side; --name overrides it. install, uninstall, start, stop and restart need root.

status prints one of running, stopped, not installed and exits like an LSB
init script: 0 running, 3 stopped, 4 not installed.`,
	}
	manager := func() (*service.Manager, error) {
		if err := requireHome(home); err != nil {
			return nil, err
		}
		return service.New(service.Config{
			Home:        home,
			Name:        name,
			StopTimeout: stopTimeout,
			// The service would refuse to start on an unsafe home: say
			// so to the operator at the terminal, not in a log.
			Registered: func() error {
				if err := agent.CheckHome(home); err != nil {
					return err
				}
				_, err := agent.LoadState(home)
				return err
			},
		})
	}
	action := func(use, short string, do func(cmd *cobra.Command, m *service.Manager) error) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				m, err := manager()
				if err != nil {
					return err
				}
				return do(cmd, m)
			},
		}
	}
	say := func(cmd *cobra.Command, format string, args ...any) {
		fmt.Fprintf(cmd.OutOrStdout(), format+"\n", args...)
	}
	cmd.AddCommand(
		action("install", "Install the service (registered home required; not started)", func(cmd *cobra.Command, m *service.Manager) error {
			if err := m.Install(cmd.Context()); err != nil {
				return err
			}
			say(cmd, "installed service %s (%s); start it with: tendril-agent service start --home %s%s", m.Name(), m.Platform(), home, nameFlag(name))
			return nil
		}),
		action("uninstall", "Stop the service and remove it", func(cmd *cobra.Command, m *service.Manager) error {
			if err := m.Uninstall(cmd.Context()); err != nil {
				return err
			}
			say(cmd, "uninstalled service %s", m.Name())
			return nil
		}),
		action("start", "Start the service", func(cmd *cobra.Command, m *service.Manager) error {
			if err := m.Start(cmd.Context()); err != nil {
				return err
			}
			say(cmd, "started service %s", m.Name())
			return nil
		}),
		action("stop", "Stop the service: running tasks are told to stop, the session is closed", func(cmd *cobra.Command, m *service.Manager) error {
			if err := m.Stop(cmd.Context()); err != nil {
				return err
			}
			say(cmd, "stopped service %s", m.Name())
			return nil
		}),
		action("restart", "Stop the service if it runs, then start it", func(cmd *cobra.Command, m *service.Manager) error {
			if err := m.Restart(cmd.Context()); err != nil {
				return err
			}
			say(cmd, "restarted service %s", m.Name())
			return nil
		}),
		action("status", "Print running, stopped or not installed; exit 0, 3 or 4", func(cmd *cobra.Command, m *service.Manager) error {
			st, err := m.Status(cmd.Context())
			if err != nil {
				return err
			}
			say(cmd, "%s", st)
			if code := st.ExitCode(); code != 0 {
				return exitCodeError{code}
			}
			return nil
		}),
	)
	for _, sub := range cmd.Commands() {
		addHome(sub, &home)
		sub.Flags().StringVar(&name, "name", "", `service name (default: "tendril-agent-" + a slug of the home folder)`)
		if sub.Name() == "install" {
			sub.Flags().DurationVar(&stopTimeout, "stop-timeout", service.DefaultStopTimeout, "how long a stop waits for the agent to end gracefully")
		}
	}
	return cmd
}

func nameFlag(name string) string {
	if name == "" {
		return ""
	}
	return " --name " + name
}

// exitCode is the process exit code err asks for, and whether it wants
// its message printed.
func exitCode(err error) (code int, print bool) {
	var ec exitCodeError
	if errors.As(err, &ec) {
		return ec.code, false
	}
	return 1, true
}
