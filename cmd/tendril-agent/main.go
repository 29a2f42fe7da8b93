// Command tendril-agent is the Tendril deployment agent. It registers with
// a coordinator and then keeps a session to it; the work is done by
// package agent, this file only parses flags and wires things up.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/version"
)

// homeEnv names the environment variable that --home defaults to, so a
// service definition can set it once.
const homeEnv = "TENDRIL_AGENT_HOME"

func main() {
	if err := newRootCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "tendril-agent: %v\n", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "tendril-agent",
		Short:         "Tendril deployment agent",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cert := &cobra.Command{Use: "certificate", Short: "Manage the agent's certificate"}
	cert.AddCommand(rotateCommand())
	root.AddCommand(registerCommand(), runCommand(), versionCommand(), thumbprintCommand(), cert, watchdogCommand())
	return root
}

// addHome adds --home, defaulting to $TENDRIL_AGENT_HOME.
func addHome(cmd *cobra.Command, home *string) {
	cmd.Flags().StringVar(home, "home", os.Getenv(homeEnv), "agent home folder (default $"+homeEnv+")")
}

func requireHome(home string) error {
	if home == "" {
		return errors.New("--home is required (or set " + homeEnv + ")")
	}
	return nil
}

func registerCommand() *cobra.Command {
	var (
		home, thumbprint, token, join, name, env, logLevel string
		servers                                            []string
		force                                              bool
	)
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register this machine with a coordinator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireHome(home); err != nil {
				return err
			}
			explicit := len(servers) > 0 || thumbprint != "" || token != ""
			switch {
			case join != "" && explicit:
				return errors.New("--join already names the coordinator, thumbprint and token: do not combine it with --server, --server-thumbprint or --token")
			case join != "":
				j, err := protocol.ParseJoin(join)
				if err != nil {
					return err
				}
				servers, thumbprint, token = j.Servers, j.Thumbprint, j.Token
			case !explicit:
				return errors.New("give either --join JOINSTRING or --server, --server-thumbprint and --token")
			default:
				var missing []string
				for _, m := range []struct {
					flag  string
					unset bool
				}{{"--server", len(servers) == 0}, {"--server-thumbprint", thumbprint == ""}, {"--token", token == ""}} {
					if m.unset {
						missing = append(missing, m.flag)
					}
				}
				if len(missing) > 0 {
					return fmt.Errorf("missing %s (or use --join)", strings.Join(missing, ", "))
				}
				for _, s := range servers {
					if err := protocol.ValidateAddress(s); err != nil {
						return fmt.Errorf("--server: %w", err)
					}
				}
				t, err := certs.NormalizeThumbprint(thumbprint)
				if err != nil {
					return fmt.Errorf("--server-thumbprint: %w", err)
				}
				thumbprint = t
			}
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			defer log.Sync()
			st, err := agent.Register(cmd.Context(), agent.RegisterConfig{
				Home:             home,
				Servers:          servers,
				ServerThumbprint: thumbprint,
				Token:            token,
				Name:             name,
				Environment:      env,
				Force:            force,
				Version:          version.Version,
				Logger:           log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered as %s in environment %s with %s (agent id %s)\n",
				st.Name, st.Environment, strings.Join(st.Servers, ", "), st.AgentID)
			return nil
		},
	}
	addHome(cmd, &home)
	f := cmd.Flags()
	f.StringArrayVar(&servers, "server", nil, "coordinator address HOST:PORT (repeat for each node)")
	f.StringVar(&thumbprint, "server-thumbprint", "", "coordinator certificate thumbprint (SHA-256 hex)")
	f.StringVar(&token, "token", "", "one-time enrollment token")
	f.StringVar(&join, "join", "", "join string from the coordinator (tendril://...), instead of --server, --server-thumbprint and --token")
	f.StringVar(&name, "name", "", "agent name (default: host name)")
	f.StringVar(&env, "environment", "", "environment to join")
	f.BoolVar(&force, "force", false, "replace an existing registration")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func runCommand() *cobra.Command {
	var (
		home, logLevel string
		calamariKeep   int
		supervised     bool
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent in the foreground until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireHome(home); err != nil {
				return err
			}
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			defer log.Sync()
			if calamariKeep < 1 {
				return fmt.Errorf("--calamari-keep %d: keep at least 1 version", calamariKeep)
			}
			// Found before Run: an upgrade replaces the file, and the
			// restart executes whatever is at this path then.
			exe, err := upgrade.Executable()
			if err != nil {
				return err
			}
			a, err := agent.New(agent.Config{Home: home, Version: version.Version, Logger: log, CalamariKeep: calamariKeep, Supervised: supervised})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log.Info("agent starting", zap.String("version", version.Version), zap.String("home", home), zap.String("thumbprint", a.Status().Thumbprint))
			if err := a.Run(ctx); errors.Is(err, agent.ErrRestart) {
				log.Info("restarting into new version", zap.String("exe", exe))
				log.Sync()
				stop()
				return reexec(exe)
			} else if err != nil {
				return err
			}
			log.Info("agent stopped")
			return nil
		},
	}
	addHome(cmd, &home)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().IntVar(&calamariKeep, "calamari-keep", 3, "Calamari versions to keep; older ones are removed, except those running tasks use")
	cmd.Flags().BoolVar(&supervised, "supervised", false, "a service manager (systemd, launchd, a container runtime) restarts the agent when it exits; after a failed upgrade the watchdog then leaves the restart to it instead of starting the agent itself")
	return cmd
}

// watchdogCommand is started by the agent itself, from the previous
// binary, after it swapped in a new one: see upgrade.Watch.
func watchdogCommand() *cobra.Command {
	var home, logLevel string
	cmd := &cobra.Command{
		Use:    "upgrade-watchdog",
		Short:  "Restore the previous agent binary if an upgrade does not commit in time (started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireHome(home); err != nil {
				return err
			}
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			defer log.Sync()
			// Only SIGTERM stops it (a machine shutting down): the
			// agent's own end must not, that is what it watches for.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
			defer stop()
			return upgrade.Watch(ctx, home, log)
		},
	}
	addHome(cmd, &home)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the agent's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !asJSON {
				fmt.Fprintln(cmd.OutOrStdout(), version.Version)
				return nil
			}
			b, err := json.Marshal(struct {
				Version string `json:"version"`
			}{version.Version})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version": "..."}`)
	return cmd
}

func thumbprintCommand() *cobra.Command {
	return printHomeCommand("thumbprint", "Print the agent's certificate thumbprint", agent.Thumbprint)
}

func rotateCommand() *cobra.Command {
	return printHomeCommand("rotate", "Create a new agent certificate; the running agent switches to it within seconds", agent.RotateCertificate)
}

// printHomeCommand is a command that takes only --home and prints one line
// computed from it.
func printHomeCommand(use, short string, f func(home string) (string, error)) *cobra.Command {
	var home string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireHome(home); err != nil {
				return err
			}
			line, err := f(home)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), line)
			return nil
		},
	}
	addHome(cmd, &home)
	return cmd
}

// newLogger builds the one logger of the process: readable on a terminal,
// JSON for log collectors otherwise.
func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var enc zapcore.Encoder
	if isatty.IsTerminal(os.Stderr.Fd()) || isatty.IsCygwinTerminal(os.Stderr.Fd()) {
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(os.Stderr), lvl)), nil
}
