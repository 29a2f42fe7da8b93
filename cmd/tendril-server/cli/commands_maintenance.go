package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

// drainPoll is how often "maintenance on --wait" asks what still runs.
var drainPoll = 2 * time.Second

func newMaintenanceCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "maintenance",
		Short: "Maintenance mode: stop new tasks and rollouts while running ones finish",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)

	var (
		wait   bool
		onJSON bool
	)
	on := &cobra.Command{
		Use:   "on [--wait]",
		Short: "Turn maintenance mode on; with --wait, return once no task or rollout is running",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			// A drain takes as long as the longest task: no bound but
			// the operator's Ctrl-C.
			timeout := adminTimeout
			if wait {
				timeout = 0
			}
			return adminCallFor(c, t, e, timeout, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.SetMaintenance(ctx, true)
				if err != nil {
					return err
				}
				if wait {
					if v, err = drain(ctx, cl, v, e.Stderr, onJSON); err != nil {
						return err
					}
				}
				if onJSON {
					return writeJSON(e.Stdout, v)
				}
				return writeMaintenance(e.Stdout, v)
			})
		},
	}
	on.Flags().BoolVar(&wait, "wait", false, "wait until no task is queued or running and no rollout is running")
	on.Flags().BoolVar(&onJSON, "json", false, "print the state as JSON")

	var offJSON bool
	off := &cobra.Command{
		Use:   "off",
		Short: "Turn maintenance mode off: new tasks and rollouts start again",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.SetMaintenance(ctx, false)
				if err != nil {
					return err
				}
				if offJSON {
					return writeJSON(e.Stdout, v)
				}
				return writeMaintenance(e.Stdout, v)
			})
		},
	}
	off.Flags().BoolVar(&offJSON, "json", false, "print the state as JSON")

	var statusJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether maintenance mode is on and what is still running",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.Maintenance(ctx)
				if err != nil {
					return err
				}
				if statusJSON {
					return writeJSON(e.Stdout, v)
				}
				return writeMaintenance(e.Stdout, v)
			})
		},
	}
	status.Flags().BoolVar(&statusJSON, "json", false, "print the GET /api/maintenance object")

	group.AddCommand(on, off, status)
	return group
}

// drain polls until nothing is left running, saying on w (stderr, so
// --json output stays one document) how much is left whenever it changes.
func drain(ctx context.Context, cl *client.Client, v api.MaintenanceView, w io.Writer, quiet bool) (api.MaintenanceView, error) {
	last := ""
	for !v.Drained() {
		if !v.On {
			return v, fmt.Errorf("maintenance mode was turned off while waiting; %s", remaining(v))
		}
		if msg := remaining(v); msg != last {
			fmt.Fprintf(w, "Waiting: %s\n", msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(drainPoll):
		}
		var err error
		if v, err = cl.Maintenance(ctx); err != nil {
			return v, err
		}
	}
	if !quiet && last != "" {
		fmt.Fprintln(w, "Drained: nothing is running.")
	}
	return v, nil
}

func remaining(v api.MaintenanceView) string {
	s := fmt.Sprintf("%d %s still running, %d queued", v.RunningTasks, plural(v.RunningTasks, "task", "tasks"), v.QueuedTasks)
	if v.RunningRollouts > 0 {
		s += fmt.Sprintf(", %d %s running", v.RunningRollouts, plural(v.RunningRollouts, "rollout", "rollouts"))
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func writeMaintenance(w io.Writer, v api.MaintenanceView) error {
	var err error
	if v.On {
		since := ""
		if v.Since != nil {
			since = " since " + v.Since.Local().Format(time.RFC3339)
		}
		_, err = fmt.Fprintf(w, "Maintenance mode is on%s: no new tasks or rollouts start.\n", since)
	} else {
		_, err = fmt.Fprintln(w, "Maintenance mode is off.")
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "Running: %s.\n", remaining(v))
	return err
}
