package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

func newNodesCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "nodes",
		Short: "List the coordinator nodes sharing the database",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the nodes with their state, version, heartbeat, agents and tasks",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				nodes, err := cl.Nodes(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, nodes)
				}
				return writeNodes(e.Stdout, nodes)
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print the GET /api/nodes array")
	group.AddCommand(list)
	return group
}

func newNodeCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "node",
		Short: "Drain a coordinator node before stopping it, and undrain it after",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)
	var (
		name      string
		wait      bool
		drainJSON bool
	)
	drain := &cobra.Command{
		Use:   "drain [--node NAME] [--wait]",
		Short: "Drain a node: it takes no new agents or tasks, finishes its tasks and sends its agents to the other nodes",
		Long: `Drain a node (by default the one the command talks to): it refuses new agent
sessions and claims no new task, lets the tasks it drives finish, hands its
rollouts to another node, and asks its agents to connect to another node,
idle ones at once and busy ones once their tasks end. Once it is drained it
can be stopped and upgraded while the other nodes serve; it starts again
draining, until "tendril-server node undrain".`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			// A drain takes as long as the longest task: no bound but the
			// operator's Ctrl-C.
			timeout := adminTimeout
			if wait {
				timeout = 0
			}
			return adminCallFor(c, t, e, timeout, func(ctx context.Context, cl *client.Client) error {
				target, err := nodeName(ctx, cl, name)
				if err != nil {
					return err
				}
				v, err := cl.SetNodeDraining(ctx, target, true)
				if err != nil {
					return err
				}
				if wait {
					if v, err = waitDrained(ctx, cl, v, e.Stderr); err != nil {
						return err
					}
				}
				if drainJSON {
					return writeJSON(e.Stdout, v)
				}
				return writeNodeState(e.Stdout, v)
			})
		},
	}
	drain.Flags().StringVar(&name, "node", "", "name of the node to drain (default: the node the command talks to)")
	drain.Flags().BoolVar(&wait, "wait", false, "wait until the node holds no agent and drives no task or rollout")
	drain.Flags().BoolVar(&drainJSON, "json", false, "print the node as JSON")

	var (
		undrainName string
		undrainJSON bool
	)
	undrain := &cobra.Command{
		Use:   "undrain [--node NAME]",
		Short: "Undrain a node: it takes agents and tasks again",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				target, err := nodeName(ctx, cl, undrainName)
				if err != nil {
					return err
				}
				v, err := cl.SetNodeDraining(ctx, target, false)
				if err != nil {
					return err
				}
				if undrainJSON {
					return writeJSON(e.Stdout, v)
				}
				return writeNodeState(e.Stdout, v)
			})
		},
	}
	undrain.Flags().StringVar(&undrainName, "node", "", "name of the node to undrain (default: the node the command talks to)")
	undrain.Flags().BoolVar(&undrainJSON, "json", false, "print the node as JSON")
	group.AddCommand(drain, undrain)
	return group
}

// nodeName is the node given, or else the one the client talks to.
func nodeName(ctx context.Context, cl *client.Client, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	info, err := cl.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Node == "" {
		return "", fmt.Errorf("the coordinator at %s does not name its node (an older version?); give --node", cl.URL())
	}
	return info.Node, nil
}

// waitDrained polls until the node is drained, saying on w (stderr) what
// it still holds whenever that changes.
func waitDrained(ctx context.Context, cl *client.Client, v api.NodeView, w io.Writer) (api.NodeView, error) {
	last := ""
	for !v.Drained {
		switch {
		case !v.Draining:
			return v, fmt.Errorf("node %s was undrained while waiting; %s", v.Name, holding(v))
		case !v.Alive:
			return v, fmt.Errorf("node %s is %s: it stopped before it was drained", v.Name, v.State)
		}
		if msg := holding(v); msg != last {
			fmt.Fprintf(w, "Waiting: node %s %s\n", v.Name, msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(drainPoll):
		}
		nodes, err := cl.Nodes(ctx)
		if err != nil {
			return v, err
		}
		found := false
		for _, n := range nodes {
			if n.ID == v.ID {
				v, found = n, true
			}
		}
		if !found {
			return v, fmt.Errorf("node %s is gone from the database", v.Name)
		}
	}
	return v, nil
}

func holding(v api.NodeView) string {
	s := fmt.Sprintf("holds %d %s and drives %d %s", v.Agents, plural(v.Agents, "agent", "agents"), v.Tasks, plural(v.Tasks, "task", "tasks"))
	if v.Rollouts > 0 {
		s += fmt.Sprintf(" and %d %s", v.Rollouts, plural(v.Rollouts, "rollout", "rollouts"))
	}
	return s
}

func writeNodeState(w io.Writer, v api.NodeView) error {
	var err error
	switch {
	case v.Drained:
		_, err = fmt.Fprintf(w, "Node %s is drained: it holds no agent and drives no task; it can be stopped.\n", v.Name)
	case v.Draining:
		_, err = fmt.Fprintf(w, "Node %s is draining: it %s.\n", v.Name, holding(v))
	default:
		_, err = fmt.Fprintf(w, "Node %s is %s: it takes agents and tasks.\n", v.Name, v.State)
	}
	return err
}

// writeNodes prints the nodes table.
func writeNodes(w io.Writer, nodes []api.NodeView) error {
	if len(nodes) == 0 {
		_, err := fmt.Fprintln(w, "No nodes are registered.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tVERSION\tAGENT ADDRESS\tHEARTBEAT\tAGENTS\tTASKS\tSTARTED")
	for _, n := range nodes {
		name := n.Name
		if n.Self {
			name += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", name, n.State, dash(n.Version), dash(n.Advertise),
			heartbeatAge(n.HeartbeatAgeSeconds), n.Agents, n.Tasks, n.StartedAt.Local().Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "(* the node that answered)")
	return err
}

func heartbeatAge(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.1fs ago", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh ago", int(d.Hours()))
}
