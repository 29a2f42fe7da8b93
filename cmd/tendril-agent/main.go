// Command tendril-agent is the Tendril deployment agent. It registers with
// a coordinator and then keeps a session to it; the work is done by
// package agent, this file only parses flags and wires things up.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tendrildeploy/tendril/internal/profiling"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/agent/logs"
	"github.com/tendrildeploy/tendril/agent/service"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/proxy"
	"github.com/tendrildeploy/tendril/version"
)

// homeEnv names the environment variable that --home defaults to, so a
// service definition can set it once.
const homeEnv = "TENDRIL_AGENT_HOME"

func main() {
	if err := newRootCommand().ExecuteContext(context.Background()); err != nil {
		code, print := exitCode(err)
		if print {
			fmt.Fprintf(os.Stderr, "tendril-agent: %v\n", err)
		}
		os.Exit(code)
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
	root.AddCommand(registerCommand(), runCommand(), versionCommand(), thumbprintCommand(), cert, watchdogCommand(), serviceCommand(), diagnosticsCommand())
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
		home, thumbprint, token, join, name, env, logLevel, proxyURL, listen string
		servers                                                              []string
		force                                                                bool
	)
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register this machine with a coordinator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireHome(home); err != nil {
				return err
			}
			if listen != "" {
				return registerListening(cmd, home, listen, thumbprint, name, force, join != "" || len(servers) > 0 || token != "" || proxyURL != "" || env != "")
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
					if err := protocol.ValidateServer(s); err != nil {
						return fmt.Errorf("--server: %w", err)
					}
				}
				t, err := certs.NormalizeThumbprint(thumbprint)
				if err != nil {
					return fmt.Errorf("--server-thumbprint: %w", err)
				}
				thumbprint = t
			}
			if _, err := proxy.Parse(proxyURL, proxyEnv()); err != nil {
				return fmt.Errorf("--proxy: %w", err)
			}
			log, closeLog, err := logs.New(logs.Config{Level: logLevel})
			if err != nil {
				return err
			}
			defer closeLog()
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
				Proxy:            proxyURL,
				ProxyEnv:         proxyEnv(),
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
	f.StringArrayVar(&servers, "server", nil, "coordinator address HOST:PORT, or wss://HOST[:PORT]/agent for a coordinator reached as a WebSocket through HTTPS infrastructure (repeat for each node)")
	f.StringVar(&thumbprint, "server-thumbprint", "", "coordinator certificate thumbprint (SHA-256 hex)")
	f.StringVar(&token, "token", "", "one-time enrollment token")
	f.StringVar(&join, "join", "", "join string from the coordinator (tendril://...), instead of --server, --server-thumbprint and --token")
	f.StringVar(&name, "name", "", "agent name (default: host name)")
	f.StringVar(&env, "environment", "", "environment to join")
	f.BoolVar(&force, "force", false, "replace an existing registration")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&proxyURL, "proxy", "", `HTTP proxy to reach the coordinator through, http://[user:password@]host:port, kept with the registration (0600); "none" for no proxy (default: HTTPS_PROXY, bypassed for NO_PROXY)`)
	f.StringVar(&listen, "listen", "", fmt.Sprintf("make a listening agent: bind this address (HOST:PORT, or :%d for every interface) and let the coordinator dial it; needs only --server-thumbprint (repeat the flag's values with commas during a coordinator rotation)", agent.DefaultListenPort))
	return cmd
}

// registerListening makes a listening agent: nothing goes over the
// network, and the output is what the operator runs on the coordinator.
func registerListening(cmd *cobra.Command, home, listen, thumbprints, name string, force, dialFlags bool) error {
	if dialFlags {
		return errors.New("--listen makes an agent the coordinator dials: do not combine it with --join, --server, --token, --proxy or --environment (the environment is given when adding the agent on the coordinator)")
	}
	if thumbprints == "" {
		return errors.New("--listen needs --server-thumbprint: the coordinator's certificate thumbprint (tendril-server info), the only coordinator the agent will accept")
	}
	if err := agent.ValidateListen(listen); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if _, err := agent.RegisterListening(agent.ListenConfig{
		Home: home, Listen: listen, ServerThumbprints: strings.Split(thumbprints, ","), Name: name, Force: force,
	}); err != nil {
		return err
	}
	thumb, err := agent.Thumbprint(home)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "THIS-HOST"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "registered as a listening agent on %s\nthumbprint %s\n\nstart it (tendril-agent run, or tendril-agent service install), then on the coordinator:\n  tendril-server agents add --listening %s --thumbprint %s --environment ENVIRONMENT\n",
		listen, thumb, net.JoinHostPort(host, port), thumb)
	return nil
}

func runCommand() *cobra.Command {
	var (
		home, logLevel, logFile, proxyURL string
		calamariKeep                      int
		supervised, asService             bool
		stopTimeout                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent in the foreground until interrupted (--service: under the service manager)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireHome(home); err != nil {
				return err
			}
			abs, err := filepath.Abs(home)
			if err != nil {
				return fmt.Errorf("--home: %w", err)
			}
			home = abs
			if calamariKeep < 1 {
				return fmt.Errorf("--calamari-keep %d: keep at least 1 version", calamariKeep)
			}
			if stopTimeout <= 0 {
				return fmt.Errorf("--stop-timeout %s: give a positive duration", stopTimeout)
			}
			// A service manager's "stdout" is nobody's terminal: the log
			// goes to a rotated file in the home.
			if asService && logFile == "" {
				logFile = filepath.Join(home, "Logs", "agent.log")
			}
			log, closeLog, err := logs.New(logs.Config{Level: logLevel, File: logFile})
			if err != nil {
				return err
			}
			defer closeLog()
			if addr := os.Getenv(envPprof); addr != "" {
				pa, err := profiling.Serve(addr)
				if err != nil {
					return fmt.Errorf("%s: %w", envPprof, err)
				}
				log.Info("serving pprof", zap.String("addr", pa.String()))
			}
			// Found before Run: an upgrade replaces the file, and the
			// restart executes whatever is at this path then.
			exe, err := upgrade.Executable()
			if err != nil {
				return err
			}
			cfg := agent.Config{Home: home, Version: version.Version, Logger: log, CalamariKeep: calamariKeep, Supervised: supervised,
				Proxy: proxyURL, ProxyEnv: proxyEnv()}
			serviceName := service.DefaultName(home)
			if asService {
				if name, managed := service.Managed(home); managed {
					// The service manager restarts the agent after a
					// failed upgrade (see upgrade.State.Service).
					cfg.Service, cfg.Supervised, serviceName = name, false, name
				}
			}
			a, err := agent.New(cfg)
			if err != nil {
				if asService {
					// Nobody watches a service's stderr: say it in the log.
					log.Error("agent cannot start", zap.Error(err))
				}
				return err
			}
			log.Info("agent starting", zap.String("version", version.Version), zap.String("home", home),
				zap.String("thumbprint", a.Status().Thumbprint), zap.String("service", cfg.Service), zap.Int("pid", os.Getpid()),
				zap.String("proxy", a.Proxy()))
			if asService {
				err = service.Run(cmd.Context(), service.RunConfig{Name: serviceName, StopTimeout: stopTimeout, Logger: log}, a.Run)
			} else {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				err = a.Run(ctx)
				stop()
			}
			if errors.Is(err, agent.ErrRestart) {
				log.Info("restarting into new version", zap.String("exe", exe))
				closeLog()
				return reexec(exe)
			} else if err != nil {
				log.Error("agent stopped", zap.Error(err))
				return err
			}
			log.Info("agent stopped")
			return nil
		},
	}
	addHome(cmd, &home)
	f := cmd.Flags()
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFile, "log-file", "", "write JSON log lines to this file, rotated at 10 MiB, 5 kept (default with --service: HOME/Logs/agent.log)")
	f.IntVar(&calamariKeep, "calamari-keep", 3, "Calamari versions to keep; older ones are removed, except those running tasks use")
	f.BoolVar(&supervised, "supervised", false, "a supervisor (a container runtime, a process manager) restarts the agent when it exits; after a failed upgrade the watchdog then leaves the restart to it instead of starting the agent itself")
	f.BoolVar(&asService, "service", false, "run under the OS service manager (the service definition passes this; see tendril-agent service)")
	f.DurationVar(&stopTimeout, "stop-timeout", service.DefaultStopTimeout, "with --service: how long a stop waits for running tasks and the session to end")
	f.StringVar(&proxyURL, "proxy", "", `HTTP proxy to reach the coordinator through, instead of the one given to register: http://[user:password@]host:port, or "none"`)
	return cmd
}

// proxyEnv reads what the environment says about proxies, upper case
// first, as curl and Go's net/http do.
func proxyEnv() proxy.Env {
	get := func(names ...string) string {
		for _, n := range names {
			if v := os.Getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	return proxy.Env{HTTPSProxy: get("HTTPS_PROXY", "https_proxy"), NoProxy: get("NO_PROXY", "no_proxy")}
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
			// Detached from everything: its log is a rotated file.
			log, closeLog, err := logs.New(logs.Config{Level: logLevel, File: upgrade.WatchdogLog(home)})
			if err != nil {
				return err
			}
			defer closeLog()
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
