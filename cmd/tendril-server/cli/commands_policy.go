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

func newPolicyCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "policy",
		Short: "Machine policies kept in the database: health interval, Calamari versions kept, rollout defaults, disk retention on agents",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)

	var showJSON bool
	show := &cobra.Command{
		Use:   "show [--json]",
		Short: "Show the machine policy and who set it",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.Policy(ctx)
				if err != nil {
					return err
				}
				if showJSON {
					return writeJSON(e.Stdout, v)
				}
				return writePolicy(e.Stdout, v)
			})
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print the policy as JSON")

	var (
		interval           time.Duration
		keep, batch, fails int
		workKeep           int
		workMinFree        string
		setJSON            bool
	)
	set := &cobra.Command{
		Use:   "set [--health-interval D] [--calamari-keep N] [--upgrade-batch N] [--upgrade-max-failures N] [--work-keep N] [--work-min-free SIZE]",
		Short: "Change the machine policy (admin key); every coordinator node applies it without a restart",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var req api.PolicyRequest
			f := c.Flags()
			if f.Changed("health-interval") {
				if interval < time.Second {
					return usageErrorf(c, "--health-interval must be at least 1s, got %s", interval)
				}
				s := interval.String()
				req.HealthInterval = &s
			}
			if f.Changed("calamari-keep") {
				if keep < 1 {
					return usageErrorf(c, "--calamari-keep must be 1 or more, got %d", keep)
				}
				req.CalamariKeep = &keep
			}
			if f.Changed("upgrade-batch") {
				if batch < 1 {
					return usageErrorf(c, "--upgrade-batch must be 1 or more, got %d", batch)
				}
				req.UpgradeBatch = &batch
			}
			if f.Changed("upgrade-max-failures") {
				if fails < 0 {
					return usageErrorf(c, "--upgrade-max-failures must not be negative, got %d", fails)
				}
				req.UpgradeMaxFailures = &fails
			}
			if f.Changed("work-keep") {
				if workKeep < 0 {
					return usageErrorf(c, "--work-keep must not be negative, got %d", workKeep)
				}
				req.WorkKeep = &workKeep
			}
			if f.Changed("work-min-free") {
				if _, err := api.ParseSize(workMinFree); err != nil {
					return usageErrorf(c, "--work-min-free: %s", err)
				}
				req.WorkMinFree = &workMinFree
			}
			if req == (api.PolicyRequest{}) {
				return usageErrorf(c, "give at least one of --health-interval, --calamari-keep, --upgrade-batch, --upgrade-max-failures, --work-keep or --work-min-free")
			}
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.SetPolicy(ctx, req)
				if err != nil {
					return err
				}
				if setJSON {
					return writeJSON(e.Stdout, v)
				}
				return writePolicy(e.Stdout, v)
			})
		},
	}
	sf := set.Flags()
	sf.DurationVar(&interval, "health-interval", 0, "how often every connected agent's health is checked (at least 1s)")
	sf.IntVar(&keep, "calamari-keep", 0, "how many Calamari versions each agent keeps")
	sf.IntVar(&batch, "upgrade-batch", 0, "batch size of a rollout started without --batch")
	sf.IntVar(&fails, "upgrade-max-failures", 0, "failures a rollout started without --max-failures tolerates")
	sf.IntVar(&workKeep, "work-keep", 0, "finished task folders each agent keeps, newest first (0 keeps none past the hour after a task finished)")
	sf.StringVar(&workMinFree, "work-min-free", "", "free-space floor of each agent's home, such as 2GiB or 500MB (0: none); below it the oldest finished task folders go")
	sf.BoolVar(&setJSON, "json", false, "print the policy as JSON")

	group.AddCommand(show, set)
	return group
}

// writePolicy prints the policy as a short table.
func writePolicy(w io.Writer, v api.PolicyView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "health interval\t%s\n", v.HealthInterval)
	fmt.Fprintf(tw, "calamari keep\t%d\n", v.CalamariKeep)
	fmt.Fprintf(tw, "upgrade batch\t%d\n", v.UpgradeBatch)
	fmt.Fprintf(tw, "upgrade max failures\t%d\n", v.UpgradeMaxFailures)
	fmt.Fprintf(tw, "work keep\t%d\n", v.WorkKeep)
	fmt.Fprintf(tw, "work min free\t%s\n", v.WorkMinFree)
	setBy := v.SetBy
	if v.UpdatedAt != nil {
		setBy += ", " + v.UpdatedAt.Local().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "set by\t%s\n", setBy)
	return tw.Flush()
}
