package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tendrildeploy/tendril/bytesize"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

// rolloutPoll is how often upgrade --wait asks for the rollout's state;
// tests shorten it.
var rolloutPoll = time.Second

func newAgentPackageCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "agent-package",
		Short: "Agent packages: upload and list the agent binaries rollouts install",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)

	var (
		version, goos, goarch string
		pushJSON              bool
	)
	push := &cobra.Command{
		Use:   "push --version V --os OS --arch ARCH FILE",
		Short: "Upload an agent binary; the coordinator checks and signs it",
		Args:  oneArg("agent binary"),
		RunE: func(c *cobra.Command, args []string) error {
			if version == "" || goos == "" || goarch == "" {
				return usageErrorf(c, "--version, --os and --arch are required")
			}
			return adminCallFor(c, t, e, 0, func(ctx context.Context, cl *client.Client) error {
				var v api.AgentPackageView
				err := uploadFile(e, args[0], func(r upload) error {
					var err error
					v, err = cl.UploadAgentPackage(ctx, version, goos, goarch, r.r, r.size)
					return err
				})
				if err != nil {
					return err
				}
				if pushJSON {
					return writeJSON(e.Stdout, v)
				}
				return writeAgentPackagePushed(e.Stdout, v)
			})
		},
	}
	f := push.Flags()
	f.StringVar(&version, "version", "", "the binary's version, e.g. 1.2.0")
	f.StringVar(&goos, "os", "", "linux, windows or darwin")
	f.StringVar(&goarch, "arch", "", "amd64, arm64, 386 or arm")
	f.BoolVar(&pushJSON, "json", false, "print the stored package as JSON")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the stored agent packages, newest first",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				ps, err := cl.AgentPackages(ctx)
				if err != nil {
					return err
				}
				if listJSON {
					return writeJSON(e.Stdout, ps)
				}
				return writeAgentPackages(e.Stdout, ps)
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the GET /api/agent-packages array")
	group.AddCommand(push, list)
	return group
}

func newUpgradeCmd(e Env) *cobra.Command {
	var (
		t       targetFlags
		req     api.RolloutRequest
		grace   time.Duration
		wait    bool
		asJSON  bool
		batchFl int
		maxFail int
	)
	cmd := &cobra.Command{
		Use:   "upgrade (--all | --environment ENV | --agent NAME...)",
		Short: "Upgrade agents to a stored agent package, in batches, halting on failures",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if n := countTrue(req.All, req.Environment != "", len(req.Agents) > 0); n != 1 {
				return usageErrorf(c, "give exactly one of --all, --environment ENV or --agent NAME (repeatable)")
			}
			// Left out, they are not sent: the coordinator's machine
			// policy decides.
			if c.Flags().Changed("batch") {
				if batchFl < 1 {
					return usageErrorf(c, "--batch must be 1 or more")
				}
				req.Batch = batchFl
			}
			if c.Flags().Changed("max-failures") {
				if maxFail < 0 {
					return usageErrorf(c, "--max-failures must not be negative")
				}
				req.MaxFailures = &maxFail
			}
			if grace < 0 || grace > 0 && grace < time.Second {
				return usageErrorf(c, "--grace must be at least 1s")
			}
			req.GraceSeconds = int(grace.Seconds())
			timeout := adminTimeout
			if wait {
				timeout = 0 // a rollout takes as long as its agents do
			}
			return adminCallFor(c, t, e, timeout, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.StartRollout(ctx, req)
				if err != nil {
					return err
				}
				if !wait {
					if asJSON {
						return writeJSON(e.Stdout, v)
					}
					_, err := fmt.Fprintf(e.Stdout, "%s\n", v.ID)
					return err
				}
				if !asJSON {
					fmt.Fprintf(e.Stdout, "rollout %s: upgrading %d agents to %s\n", v.ID, len(v.Agents), v.Version)
				}
				v, err = followRollout(ctx, e, cl, v, !asJSON)
				if err != nil {
					return err
				}
				if asJSON {
					if err := writeJSON(e.Stdout, v); err != nil {
						return err
					}
				}
				return rolloutOutcome(e, v, !asJSON)
			})
		},
	}
	addTargetFlags(cmd, &t)
	f := cmd.Flags()
	f.BoolVar(&req.All, "all", false, "upgrade every agent of every environment")
	f.StringVar(&req.Environment, "environment", "", "upgrade every agent of this environment")
	f.StringArrayVar(&req.Agents, "agent", nil, "upgrade this agent; repeat for several")
	f.StringVar(&req.Version, "version", "", "agent version to install (default: the newest stored package)")
	f.IntVar(&batchFl, "batch", 0, "how many agents to upgrade at once (default: the machine policy's, see policy show)")
	f.IntVar(&maxFail, "max-failures", 0, "failures (or rollbacks) tolerated before the rollout halts (default: the machine policy's)")
	f.BoolVar(&req.AllowDowngrade, "allow-downgrade", false, "allow installing a version lower than an agent runs")
	f.DurationVar(&grace, "grace", 0, "how long a new version has to connect before the agent restores the previous one (default: the coordinator's, 2m)")
	f.BoolVar(&wait, "wait", false, "follow the rollout until it ends; exit 1 if it halted")
	f.BoolVar(&asJSON, "json", false, "print the rollout as JSON (with --wait: once it ends)")
	return cmd
}

// countTrue is how many of bs are set: how many kinds of target a
// command was given.
func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// followRollout polls a rollout until it is no longer running. When
// stdout and stderr are a terminal it shows a progress bar of agents in a
// final state on stderr, with each failure printed above it; otherwise,
// when lines is set, it prints one line per agent state change, for a
// script or a log file to keep. A halt by an operator is said either way.
func followRollout(ctx context.Context, e Env, cl *client.Client, v api.RolloutView, lines bool) (api.RolloutView, error) {
	var bar *progressbar.ProgressBar
	if e.Terminal && e.Console && lines {
		bar = progressbar.NewOptions(len(v.Agents),
			progressbar.OptionSetWriter(e.Stderr),
			progressbar.OptionSetDescription(rolloutProgress(v)),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.Stderr) }),
		)
		defer func() {
			if !bar.IsFinished() {
				bar.Exit()
			}
		}()
	}
	// above prints a line for a person without tearing the bar.
	above := func(format string, args ...any) {
		if bar != nil {
			bar.Clear()
		}
		fmt.Fprintf(e.Stdout, format, args...)
	}
	seen := map[string]string{}
	paused := false
	for {
		for _, a := range v.Agents {
			if seen[a.Agent] == a.State {
				continue
			}
			switch {
			case lines && bar == nil:
				above("%s %s: %s\n", a.UpdatedAt.UTC().Format(time.RFC3339), a.Agent, stateLine(a))
			case bar != nil && (a.State == api.UpgradeFailed || a.State == api.UpgradeRolledBack):
				above("%s %s: %s\n", a.Agent, strings.ReplaceAll(a.State, "_", " "), a.Reason)
			}
			seen[a.Agent] = a.State
		}
		if v.Paused != paused && lines {
			if v.Paused {
				above("rollout %s halted by an operator: no further batch starts until \"tendril-server rollout resume %s\"\n", v.ID, v.ID)
			} else {
				above("rollout %s resumed\n", v.ID)
			}
		}
		paused = v.Paused
		if bar != nil {
			bar.Describe(rolloutProgress(v))
			bar.Set(finalCount(v))
		}
		if v.State != api.RolloutRunning {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(rolloutPoll):
		}
		next, err := cl.Rollout(ctx, v.ID)
		if err != nil {
			return v, err
		}
		v = next
	}
}

// rolloutProgress is the progress bar's label: what is under way.
func rolloutProgress(v api.RolloutView) string {
	if v.Paused {
		return "halted by an operator"
	}
	batch, last := 0, 0
	for _, a := range v.Agents {
		last = max(last, a.Batch)
		if a.Batch > 0 && !api.UpgradeFinal(a.State) && a.State != api.UpgradeQueued && (batch == 0 || a.Batch < batch) {
			batch = a.Batch
		}
	}
	if batch == 0 {
		return "upgrading agents"
	}
	return fmt.Sprintf("upgrading agents, batch %d of %d", batch, last)
}

func finalCount(v api.RolloutView) int {
	return v.Counts[api.UpgradeSucceeded] + v.Counts[api.UpgradeRolledBack] + v.Counts[api.UpgradeFailed]
}

func stateLine(a api.RolloutAgentView) string {
	if a.Reason == "" {
		return a.State
	}
	return a.State + " (" + a.Reason + ")"
}

// rolloutOutcome turns a finished rollout into the command's result: exit
// 1 if it halted, naming the agents that failed.
func rolloutOutcome(e Env, v api.RolloutView, text bool) error {
	if v.State == api.RolloutSucceeded {
		if text {
			fmt.Fprintf(e.Stdout, "rollout %s succeeded: %s\n", v.ID, v.Reason)
		}
		return nil
	}
	var failed []string
	for _, a := range v.Agents {
		if a.State == api.UpgradeFailed || a.State == api.UpgradeRolledBack {
			failed = append(failed, fmt.Sprintf("%s %s: %s", a.Agent, strings.ReplaceAll(a.State, "_", " "), a.Reason))
		}
	}
	if text && len(failed) > 0 {
		fmt.Fprintf(e.Stdout, "%s\n", strings.Join(failed, "\n"))
	}
	return &exitError{code: 1, msg: fmt.Sprintf("rollout %s %s: %s", v.ID, v.State, v.Reason)}
}

func newRolloutCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "rollout",
		Short: "Agent rollouts started by \"upgrade\"",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)
	var showJSON bool
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a rollout and each agent's state, with its time and reason",
		Args:  oneArg("rollout id"),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.Rollout(ctx, args[0])
				if err != nil {
					return err
				}
				if showJSON {
					return writeJSON(e.Stdout, v)
				}
				return writeRollout(e.Stdout, v, time.Now())
			})
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print the GET /api/rollouts/{id} object")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List rollouts, newest first, with their state and progress",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				vs, err := cl.Rollouts(ctx)
				if err != nil {
					return err
				}
				if listJSON {
					return writeJSON(e.Stdout, vs)
				}
				return writeRollouts(e.Stdout, vs)
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the GET /api/rollouts array")

	action := func(use, short string, call func(*client.Client, context.Context, string) (api.RolloutView, error), done string) *cobra.Command {
		var asJSON bool
		c := &cobra.Command{
			Use:   use + " ID",
			Short: short,
			Args:  oneArg("rollout id"),
			RunE: func(c *cobra.Command, args []string) error {
				return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
					v, err := call(cl, ctx, args[0])
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(e.Stdout, v)
					}
					_, err = fmt.Fprintf(e.Stdout, "rollout %s %s\n", v.ID, done)
					return err
				})
			},
		}
		c.Flags().BoolVar(&asJSON, "json", false, "print the rollout as JSON")
		return c
	}
	halt := action("halt", "Halt a rollout: no further batch starts; agents already upgrading finish",
		(*client.Client).HaltRollout, "halted: no further batch starts until it is resumed; agents already upgrading finish")
	resume := action("resume", "Resume a halted rollout: its next batch starts",
		(*client.Client).ResumeRollout, "resumed: its next batch starts once the one under way has finished")
	group.AddCommand(show, list, halt, resume)
	return group
}

// writeRollouts prints the rollouts table.
func writeRollouts(w io.Writer, vs []api.RolloutView) error {
	if len(vs) == 0 {
		_, err := fmt.Fprintln(w, "No rollouts yet. Start one with \"tendril-server upgrade --environment ENV\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tTARGET\tVERSION\tSTATE\tDONE\tREASON")
	for _, v := range vs {
		target := v.Environment
		switch {
		case v.TargetAgents != nil:
			target = strings.Join(v.TargetAgents, ",")
		case v.All:
			target = "(all)"
		}
		state := v.State
		if v.Paused {
			state = "halted by an operator"
		}
		total := 0
		for _, n := range v.Counts {
			total += n
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", v.ID, v.CreatedAt.UTC().Format(time.RFC3339), target, v.Version,
			state, finalCount(v), total, dash(v.Reason))
	}
	return tw.Flush()
}

func writeAgentPackagePushed(w io.Writer, v api.AgentPackageView) error {
	if !v.Created {
		_, err := fmt.Fprintf(w, "agent %s for %s/%s was already stored\n", v.Version, v.OS, v.Arch)
		return err
	}
	_, err := fmt.Fprintf(w, "stored agent %s for %s/%s (%s, signed)\n", v.Version, v.OS, v.Arch, bytesize.Format(v.Size))
	return err
}

func writeAgentPackages(w io.Writer, ps []api.AgentPackageView) error {
	if len(ps) == 0 {
		_, err := fmt.Fprintln(w, "No agent packages yet. Upload one with \"tendril-server agent-package push --version V --os OS --arch ARCH FILE\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tPLATFORM\tSIZE\tSHA256\tUPLOADED")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\n", p.Version, p.OS, p.Arch, bytesize.Format(p.Size), shortSum(p.SHA256),
			p.UploadedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func shortSum(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// writeRollout prints a rollout's header and one line per agent.
func writeRollout(w io.Writer, v api.RolloutView, now time.Time) error {
	target := "all environments"
	switch {
	case v.TargetAgents != nil:
		target = "agents " + strings.Join(v.TargetAgents, ", ")
	case !v.All:
		target = "environment " + v.Environment
	}
	fmt.Fprintf(w, "Rollout %s: agent %s to %s, batches of %d, max failures %d\n", v.ID, v.Version, target, v.Batch, v.MaxFailures)
	state := v.State
	if v.Reason != "" {
		state += " (" + v.Reason + ")"
	}
	if v.Paused {
		state += ", halted by an operator: no further batch starts until it is resumed"
	}
	fmt.Fprintf(w, "State: %s\n", state)
	var counts []string
	for _, s := range []string{api.UpgradeQueued, api.UpgradeWaitingForIdle, api.UpgradeSending, api.UpgradeInstalling,
		api.UpgradeAwaitingReconnect, api.UpgradeSucceeded, api.UpgradeRolledBack, api.UpgradeFailed} {
		if n := v.Counts[s]; n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n, s))
		}
	}
	fmt.Fprintf(w, "Agents: %s\n\n", dash(strings.Join(counts, ", ")))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBATCH\tFROM\tSTATE\tSINCE\tREASON")
	for _, a := range v.Agents {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", a.Agent, a.Batch, dash(a.From), a.State, since(a.UpdatedAt, now), dash(a.Reason))
	}
	return tw.Flush()
}

// since is a time for a table: how long ago, to the second.
func since(t, now time.Time) string {
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}
