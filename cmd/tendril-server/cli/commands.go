package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/internal/profiling"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/releases"
	"github.com/tendrildeploy/tendril/version"
)

// Environment variables the command reads.
const (
	envData   = "TENDRIL_DATA"
	envURL    = "TENDRIL_URL"
	envAPIKey = "TENDRIL_API_KEY"
	// envDatabase keeps a PostgreSQL password out of the process list.
	envDatabase = "TENDRIL_DATABASE"
)

// adminTimeout bounds one admin command. The longest call, a certificate
// rotation, is bounded at five minutes by the coordinator itself; this
// only keeps a hung coordinator from hanging a script forever.
const adminTimeout = 6 * time.Minute

// Env is the process's world as the commands see it: main gives the real
// one, tests their own.
type Env struct {
	// Stdout receives results: tables, JSON, join strings. Stderr receives
	// logs, progress and the one line that says why a command failed.
	Stdout, Stderr io.Writer
	// Getenv looks up the TENDRIL_* environment variables; it must not be
	// nil.
	Getenv func(string) string
	// Console is true when stderr is a terminal: logs are then for a
	// person, not a collector.
	Console bool
	// Terminal is true when stdout is a terminal: progress shows as a
	// bar rather than as lines a script or a log file would keep.
	Terminal bool
	// Stdin is read for passwords; nil reads nothing.
	Stdin io.Reader
}

// Run runs the tendril-server command line args (without the program
// name) and returns the exit code: 0, 1 for a failure, 2 for a usage
// error, 130 when ctx ended (Ctrl-C or TERM), or a task's own (task run).
// Every failure is one line on e.Stderr.
func Run(ctx context.Context, args []string, e Env) int {
	root := newRootCmd(e)
	root.SetArgs(args)
	err := unknownCommand(root, args)
	if err == nil {
		err = root.ExecuteContext(ctx)
	}
	if err == nil {
		return 0
	}
	if xe, ok := errors.AsType[*exitError](err); ok {
		if xe.msg != "" {
			fmt.Fprintln(e.Stderr, errorLine(err))
		}
		return xe.code
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// Ctrl-C (or TERM) cut a call short: say so rather than quote
		// "context canceled", and exit as an interrupted shell command does.
		fmt.Fprintln(e.Stderr, "tendril-server: interrupted")
		return 130
	}
	fmt.Fprintln(e.Stderr, errorLine(err))
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRootCmd(e Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "tendril-server",
		Short: "Tendril coordinator: enrolls agents, keeps their sessions and serves the admin API",
		Long: `Tendril coordinator: enrolls agents, keeps their sessions and serves the admin API.

Admin commands talk to a running coordinator: give --data DIR on its host, or
--url and --api-key (TENDRIL_URL, TENDRIL_API_KEY) from anywhere. Listings
print tables, or with --json what the HTTP API answers.

Exit codes:
  0    success
  1    failure, with one line on stderr saying why; also: upgrade --wait when
       the rollout halted, calamari update when an agent failed
  2    usage error: unknown command or flag, missing or invalid argument
  130  interrupted (Ctrl-C or TERM); task run also when the task was cancelled
  N    task run: the task's own exit code (1 if it failed without one; with
       several agents, 0 if every task succeeded, else 1)`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
	}
	root.SetOut(e.Stdout)
	root.SetErr(e.Stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageErrorf(c, "%v", err) })
	root.AddCommand(
		newInitCmd(e), newRunCmd(e), newThumbprintCmd(e),
		newTokenCmd(e), newAgentsCmd(e), newCertificateCmd(e),
		newCalamariCmd(e), newTaskCmd(e), newVersionCmd(e),
		newAgentPackageCmd(e), newUpgradeCmd(e), newRolloutCmd(e),
		newMaintenanceCmd(e), newBackupCmd(e), newRestoreCmd(e),
		newUserCmd(e), newAPIKeyCmd(e),
		newNodesCmd(e), newNodeCmd(e), newPolicyCmd(e),
		newExportCmd(e), newImportCmd(e), newInfoCmd(e),
		newDiagnosticsCmd(e), newSigningKeyCmd(e),
	)
	return root
}

// groupRunE makes a command that only groups others refuse to run alone:
// cobra would print help and exit 0, which hides typos in scripts.
func groupRunE(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf(c, "unknown command %q for %q", args[0], c.CommandPath())
	}
	c.SetOut(c.ErrOrStderr())
	c.Help()
	return usageErrorf(c, "no command given")
}

// unknownCommand reports a word where a command belongs that names none,
// with the commands it may have meant. It runs before cobra, which parses
// a group's flags first and would report the first flag the group lacks
// ("unknown flag: --json") instead of the mistyped command. Only the
// words before the first flag are commands.
func unknownCommand(root *cobra.Command, args []string) error {
	c := root
	for _, a := range args {
		if strings.HasPrefix(a, "-") || !c.HasSubCommands() {
			return nil
		}
		next, _, err := c.Find([]string{a})
		if err == nil && next != c {
			c = next
			continue
		}
		if a == "help" {
			return nil
		}
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2 // cobra's own default, set only when it suggests itself
		}
		msg := fmt.Sprintf("unknown command %q for %q", a, c.CommandPath())
		if s := c.SuggestionsFor(a); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return usageErrorf(c, "%s", msg)
	}
	return nil
}

func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf(c, "unexpected argument %q", args[0])
	}
	return nil
}

func oneArg(name string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageErrorf(c, "want exactly one %s, got %d arguments", name, len(args))
		}
		return nil
	}
}

// dataDir returns --data or, without it, $TENDRIL_DATA.
func dataDir(c *cobra.Command, flag string, e Env) (string, error) {
	if d := first(flag, e.Getenv(envData)); d != "" {
		return d, nil
	}
	return "", usageErrorf(c, "no data folder given: use --data DIR or set %s", envData)
}

func newInitCmd(e Env) *cobra.Command {
	var data, database string
	c := &cobra.Command{
		Use:   "init --data DIR",
		Short: "Create a coordinator in a data folder: keys, certificates, database and an admin API key",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := dataDir(c, data, e)
			if err != nil {
				return err
			}
			res, err := datadir.InitWith(c.Context(), dir, datadir.InitOptions{Database: first(database, e.Getenv(envDatabase))})
			if errors.Is(err, datadir.ErrAlreadyInitialized) {
				return fmt.Errorf("%w; nothing was changed (start it with \"tendril-server run --data %s\")", err, dir)
			}
			if err != nil {
				return err
			}
			return writeInit(e.Stdout, res)
		},
	}
	c.Flags().StringVar(&data, "data", "", "data folder to create (default $"+envData+")")
	c.Flags().StringVar(&database, "database", "", "PostgreSQL URL to keep the coordinator's state in instead of the data folder (default $"+envDatabase+")")
	return c
}

func newRunCmd(e Env) *cobra.Command {
	var (
		data, listen, httpAddr, tlsMin string
		database, nodeName, advertise  string
		heartbeat                      time.Duration
		httpCert, httpKey, logLevel    string
		releaseFeed                    string
		signingKey, signingPassFile    string
		healthInterval, releaseCheck   time.Duration
		acceptRate                     float64
		maxHandshakes, handshakeQueue  int
		handshakesPerAddress           int
	)
	c := &cobra.Command{
		Use:   "run --data DIR",
		Short: "Run the coordinator in the foreground until interrupted",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := dataDir(c, data, e)
			if err != nil {
				return err
			}
			minVersion, err := protocol.ParseTLSVersion(tlsMin)
			if err != nil {
				return usageErrorf(c, "--tls-min: %v", err)
			}
			// Deprecated: the interval is the machine policy's. Given
			// explicitly, the coordinator copies it there once unless an
			// operator set the policy; otherwise it is not passed on.
			if !c.Flags().Changed("health-interval") {
				healthInterval = 0
			} else if healthInterval < time.Second {
				return usageErrorf(c, "--health-interval must be at least 1s, got %s", healthInterval)
			}
			if releaseCheck <= 0 {
				return usageErrorf(c, "--release-check-interval must be positive, got %s", releaseCheck)
			}
			if heartbeat <= 0 {
				return usageErrorf(c, "--heartbeat-interval must be positive, got %s", heartbeat)
			}
			if acceptRate < 0 || maxHandshakes < 0 || handshakeQueue < 0 || handshakesPerAddress < 0 {
				return usageErrorf(c, "--accept-rate, --max-handshakes, --max-handshakes-per-address and --handshake-queue must not be negative")
			}
			httpTLS, err := loadHTTPTLS(httpCert, httpKey)
			if err != nil {
				return err
			}
			log, err := newLogger(logLevel, e.Stderr, e.Console)
			if err != nil {
				return usageErrorf(c, "--log-level: %v", err)
			}
			defer log.Sync()
			if protocol.LegacyTLS(minVersion) {
				log.Named("cmd").Warn("agents may connect with TLS below 1.2; such agents are shown with a health warning",
					zap.String("tls_min", tlsMin))
			}
			if a := e.Getenv(envPprof); a != "" {
				pa, err := profiling.Serve(a)
				if err != nil {
					return fmt.Errorf("%s: %w", envPprof, err)
				}
				log.Named("cmd").Info("serving pprof", zap.String("addr", pa.String()))
			}
			var signingPass []byte
			if signingPassFile != "" {
				if signingPass, err = readPassphrase(signingPassFile); err != nil {
					return err
				}
			}
			dbURL, err := databaseURL(dir, database, e)
			if err != nil {
				return err
			}
			st, err := openDatabase(c.Context(), dir, dbURL, log)
			if err != nil {
				return err
			}
			if st != nil {
				defer st.Close() // New closes it too, but not when it fails early
			}
			srv, err := server.New(c.Context(), server.Config{
				Store:   st,
				DataDir: dir, Listen: listen, HTTP: httpAddr, HTTPTLS: httpTLS,
				SigningKey: signingKey, SigningKeyPassphrase: signingPass,
				TLSMin: minVersion, HealthInterval: healthInterval,
				AcceptRate: acceptRate, AcceptBurst: int(2 * acceptRate),
				MaxHandshakes: maxHandshakes, HandshakeQueue: handshakeQueue,
				MaxHandshakesPerAddress: handshakesPerAddress,
				ReleaseFeed:             releaseFeed, ReleaseCheckInterval: releaseCheck,
				NodeName: nodeName, Advertise: advertise, HeartbeatInterval: heartbeat,
				Version: version.Version, Logger: log,
			})
			if err != nil {
				return err
			}
			return srv.Run(c.Context())
		},
	}
	f := c.Flags()
	f.StringVar(&data, "data", "", "data folder made by init (default $"+envData+")")
	f.StringVar(&database, "database", "", "PostgreSQL URL of the database shared by the coordinator's nodes, instead of the data folder's; waited for while unreachable (default $"+envDatabase+")")
	f.StringVar(&listen, "listen", server.DefaultListen, "address agents connect to")
	f.StringVar(&nodeName, "node-name", "", "name of this coordinator node among those sharing the database (default: host name and agent port, e.g. web-a:10943)")
	f.StringVar(&advertise, "advertise", "", "host:port agents are told to dial this node at, in join strings (default: the --listen address, a wildcard host replaced by the host name)")
	f.DurationVar(&heartbeat, "heartbeat-interval", cluster.DefaultHeartbeatInterval, "how often this node records that it is alive; the other nodes count it dead after three missed")
	f.StringVar(&httpAddr, "http", server.DefaultHTTP, "address of the HTTP API; beyond loopback it needs --http-cert and --http-key")
	f.StringVar(&tlsMin, "tls-min", "1.2", "lowest TLS version agents may use: 1.0, 1.1, 1.2 or 1.3 (below 1.2 only for old hosts)")
	f.DurationVar(&healthInterval, "health-interval", time.Minute, "deprecated, now kept in the database (tendril-server policy set --health-interval D); given, it is copied there once unless an operator set the policy")
	f.Float64Var(&acceptRate, "accept-rate", 0, "new agent connections accepted per second, bursts of twice that; beyond it connections are shed (0: 2000)")
	f.IntVar(&maxHandshakes, "max-handshakes", 0, "agent TLS handshakes in progress at once (0: 256)")
	f.IntVar(&handshakesPerAddress, "max-handshakes-per-address", 0,
		"agent TLS handshakes in progress at once from one address (an IPv6 /64), and connections from it still silent; more wait in the queue. WebSocket agents are exempt (0: a quarter of --max-handshakes)")
	f.IntVar(&handshakeQueue, "handshake-queue", 0, "connections that may wait for a handshake slot (5s, or 30s for an agent told so) before being shed (0: 8192)")
	f.StringVar(&releaseFeed, "release-feed", "", "URL or file of the release feed to check for newer coordinator versions (see GET /api/updates)")
	f.DurationVar(&releaseCheck, "release-check-interval", releases.DefaultInterval, "how often the release feed is read after the first read at start")
	f.StringVar(&httpCert, "http-cert", "", "PEM certificate (chain) to serve the HTTP API over HTTPS")
	f.StringVar(&httpKey, "http-key", "", "PEM private key of --http-cert")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&signingKey, "signing-key", "", "the signing key agents pinned, when kept outside the data folder (default: DIR/signing.key)")
	f.StringVar(&signingPassFile, "signing-key-passphrase-file", "", "file holding the passphrase of a --signing-key sealed with tendril-server signing-key seal")
	return c
}

// loadHTTPTLS reads the API's HTTPS certificate. The API always requires
// TLS 1.2: lower versions exist only for old agents on the agent port.
// The coordinator holds the config to its TLS profile (server.Config's
// HTTPTLS), so the cipher suites are not chosen here.
func loadHTTPTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, &usageError{err: errors.New("--http-cert and --http-key must be given together"), cmd: "tendril-server run"}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load HTTPS certificate: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}, nil
}

func newThumbprintCmd(e Env) *cobra.Command {
	var data string
	c := &cobra.Command{
		Use:   "thumbprint --data DIR",
		Short: "Print the coordinator's certificate thumbprint, which agents pin",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := dataDir(c, data, e)
			if err != nil {
				return err
			}
			t, err := datadir.ReadThumbprint(dir)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.Stdout, t)
			return err
		},
	}
	c.Flags().StringVar(&data, "data", "", "data folder made by init (default $"+envData+")")
	return c
}

// addTargetFlags adds the flags that say which coordinator an admin
// command talks to.
func addTargetFlags(c *cobra.Command, t *targetFlags) {
	f := c.PersistentFlags()
	f.StringVar(&t.DataDir, "data", "", "data folder of a coordinator running on this host (default $"+envData+")")
	f.StringVar(&t.URL, "url", "", "URL of the coordinator's API, e.g. http://127.0.0.1:10980 (default $"+envURL+")")
	f.StringVar(&t.APIKey, "api-key", "", "API key (default $"+envAPIKey+", which keeps it out of the process list)")
}

// adminCall runs fn with a client of the coordinator the flags name,
// bounded by adminTimeout.
func adminCall(c *cobra.Command, t targetFlags, e Env, fn func(ctx context.Context, cl *client.Client) error) error {
	return adminCallFor(c, t, e, adminTimeout, fn)
}

// adminCallFor is adminCall with its own bound; 0 means none, for calls
// that rightly take as long as they take (uploads, pushes to a fleet,
// followed task logs) and end only when done or interrupted. The client
// has no overall timeout of its own.
func adminCallFor(c *cobra.Command, t targetFlags, e Env, timeout time.Duration, fn func(ctx context.Context, cl *client.Client) error) error {
	url, key, err := resolveTarget(t, e.Getenv)
	if err != nil {
		if ue, ok := errors.AsType[*usageError](err); ok {
			ue.cmd = c.CommandPath()
		}
		return err
	}
	cl, err := client.New(url, key, nil)
	if err != nil {
		return err
	}
	defer cl.CloseIdleConnections()
	ctx := c.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return fn(ctx, cl)
}

func newTokenCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "token",
		Short: "Enrollment tokens",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)
	var (
		environment string
		ttl         time.Duration
		servers     []string
		asJSON      bool
	)
	create := &cobra.Command{
		Use:   "create --environment ENV",
		Short: "Create a one-time enrollment token and print the join string for tendril-agent register --join",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if environment == "" {
				return usageErrorf(c, "--environment is required")
			}
			req := api.TokenRequest{Environment: environment, TTL: ttl.String(), Servers: servers}
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				res, err := cl.CreateToken(ctx, req)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, res)
				}
				_, err = fmt.Fprintln(e.Stdout, res.Join)
				return err
			})
		},
	}
	f := create.Flags()
	f.StringVar(&environment, "environment", "", "environment the agent joins (required)")
	f.DurationVar(&ttl, "ttl", api.DefaultTokenTTL, "how long the token can be used")
	f.StringSliceVar(&servers, "server", nil, "coordinator HOST:PORT agents should dial, repeatable (default: the agent listen address)")
	f.BoolVar(&asJSON, "json", false, "print the token as JSON")
	group.AddCommand(create, newTokenListCmd(e, &t), newTokenRevokeCmd(e, &t))
	return group
}

func newAgentsCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "agents",
		Short: "List, add and delete agents",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List agents with their mode, connection, health, TLS version, Calamari and upgrade state",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				if asJSON {
					raw, err := cl.AgentsJSON(ctx)
					if err != nil {
						return err
					}
					return writeRawJSON(e.Stdout, raw)
				}
				agents, err := cl.Agents(ctx)
				if err != nil {
					return err
				}
				return writeAgents(e.Stdout, agents, time.Now())
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print the GET /api/agents array")
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an agent: its session ends and its certificate is refused from then on",
		Args:  oneArg("agent name"),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				if err := cl.DeleteAgent(ctx, args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(e.Stdout, "Deleted agent %s; its certificate is refused from now on.\n", args[0])
				return err
			})
		},
	}
	group.AddCommand(list, newAgentsAddCmd(e, &t), newAgentsSetAddressCmd(e, &t), del, newAgentsDiagnosticsCmd(e, &t))
	return group
}

func newCertificateCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "certificate",
		Short: "The coordinator's certificate",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)
	var asJSON, force bool
	rotate := &cobra.Command{
		Use:   "rotate [--force]",
		Short: "Replace the coordinator's certificate; connected agents learn the new thumbprint first",
		Long: `Replace the coordinator's certificate. Connected agents learn the new
thumbprint before it is served; agents away learn it when they reconnect,
whatever number of rotations they missed, because the new certificate is
endorsed by the signing key they pinned. Agents older than that cannot check
an endorsement: a rotation that would lock out one of them (away since
before the previous rotation) is refused, naming them, unless --force.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				res, err := cl.RotateCertificate(ctx, force)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, res)
				}
				// Whether the previous certificate is still served is worth
				// saying; if the coordinator cannot tell, assume it is.
				served := true
				if info, err := cl.Info(ctx); err == nil {
					served = slices.Contains(info.Thumbprints, res.Previous)
				}
				return writeRotation(e.Stdout, res, served)
			})
		},
	}
	rotate.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	rotate.Flags().BoolVar(&force, "force", false, "rotate even if older agents away would be locked out")
	group.AddCommand(rotate)
	return group
}

// versionCheckTimeout bounds "version --check": one small GET.
const versionCheckTimeout = 30 * time.Second

func newVersionCmd(e Env) *cobra.Command {
	var (
		t      targetFlags
		asJSON bool
		check  bool
	)
	c := &cobra.Command{
		Use:   "version [--check]",
		Short: "Print the version; with --check, ask the running coordinator whether a newer one is out",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !check {
				if asJSON {
					return writeJSON(e.Stdout, map[string]string{"version": version.Version})
				}
				_, err := fmt.Fprintln(e.Stdout, version.Version)
				return err
			}
			return adminCallFor(c, t, e, versionCheckTimeout, func(ctx context.Context, cl *client.Client) error {
				u, err := cl.Updates(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, struct {
						Version string          `json:"version"`
						Updates api.UpdatesView `json:"updates"`
					}{version.Version, u})
				}
				return writeUpdates(e.Stdout, version.Version, u)
			})
		},
	}
	addTargetFlags(c, &t)
	c.Flags().BoolVar(&check, "check", false, "ask the running coordinator (--data or --url) whether its release feed lists a newer version")
	c.Flags().BoolVar(&asJSON, "json", false, `print {"version": "..."}, with --check also {"updates": GET /api/updates}`)
	return c
}

// writeUpdates prints the local version and the coordinator's update
// notice.
func writeUpdates(w io.Writer, local string, u api.UpdatesView) error {
	var b strings.Builder
	fmt.Fprintln(&b, local)
	if u.Current != local {
		fmt.Fprintf(&b, "The coordinator runs %s.\n", u.Current)
	}
	switch {
	case u.UpdateAvailable:
		fmt.Fprintf(&b, "Tendril %s is available (you run %s)", u.Latest, u.Current)
		if u.NotesURL != "" {
			fmt.Fprintf(&b, ": %s", u.NotesURL)
		}
		b.WriteString("\n")
		if u.Breaking {
			b.WriteString("This release has breaking changes: read the notes before upgrading.\n")
		}
	case u.CheckedAt != nil:
		fmt.Fprintf(&b, "Up to date (release feed read %s).\n", u.CheckedAt.Local().Format(time.RFC3339))
	case u.Error == "":
		b.WriteString("The coordinator has not read its release feed yet; try again in a moment.\n")
	}
	if u.Error != "" {
		fmt.Fprintf(&b, "Could not check for updates: %s\n", u.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
