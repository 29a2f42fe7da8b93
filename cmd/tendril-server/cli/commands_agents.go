package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
)

// newAgentsAddCmd is "agents add": a listening agent, which the
// coordinator dials, is added by the operator rather than enrolling
// itself with a token as a polling agent does.
func newAgentsAddCmd(e Env, t *targetFlags) *cobra.Command {
	var (
		req    api.ListeningAgentRequest
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "add --listening HOST:PORT --thumbprint HEX --environment ENV [--name NAME]",
		Short: "Add a listening agent: the coordinator dials it at HOST:PORT",
		Long: `Add a listening agent: one that waits for the coordinator to dial it, for
machines that accept inbound connections but may not open outbound ones.

--listening is the address the coordinator reaches the agent at (behind NAT,
not necessarily the one the agent binds); --thumbprint is the agent's
certificate thumbprint, which its register command printed on its machine.
The coordinator accepts only that certificate. The name defaults to the
address's host. The agent is added at once; "agents list" shows whether the
coordinator could connect to it, and why not.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkListeningFlags(c, req); err != nil {
				return err
			}
			return adminCall(c, *t, e, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.AddListeningAgent(ctx, req)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, v)
				}
				_, err = fmt.Fprintf(e.Stdout, "Added listening agent %s in %s: the coordinator dials %s and accepts only the certificate %s.\n"+
					"See whether it connected with \"tendril-server agents list\".\n", v.Name, v.Environment, v.Address, v.Thumbprint)
				return err
			})
		},
	}
	f := c.Flags()
	f.StringVar(&req.Address, "listening", "", "HOST:PORT the coordinator dials the agent at (required)")
	f.StringVar(&req.Thumbprint, "thumbprint", "", "the agent's certificate thumbprint, as its register command printed it (required)")
	f.StringVar(&req.Environment, "environment", "", "environment the agent belongs to (required)")
	f.StringVar(&req.Name, "name", "", "the agent's name (default: the host of --listening)")
	f.BoolVar(&asJSON, "json", false, "print the agent as JSON")
	return c
}

// checkListeningFlags refuses an "agents add" command line before asking
// the coordinator, naming the flag to fix: the coordinator would refuse
// the same values, in words that cannot name a flag.
func checkListeningFlags(c *cobra.Command, req api.ListeningAgentRequest) error {
	var missing []string
	for _, f := range []struct{ flag, value string }{
		{"--listening HOST:PORT", req.Address},
		{"--thumbprint HEX", req.Thumbprint},
		{"--environment ENV", req.Environment},
	} {
		if f.value == "" {
			missing = append(missing, f.flag)
		}
	}
	switch len(missing) {
	case 0:
	case 1:
		return usageErrorf(c, "%s is required", missing[0])
	default:
		return usageErrorf(c, "%s and %s are required", strings.Join(missing[:len(missing)-1], ", "), missing[len(missing)-1])
	}
	if err := protocol.ValidateAddress(req.Address); err != nil {
		return usageErrorf(c, "--listening: %v", err)
	}
	if _, err := certs.NormalizeThumbprint(req.Thumbprint); err != nil {
		return usageErrorf(c, "--thumbprint: %v", err)
	}
	if err := api.ValidateName("environment", req.Environment); err != nil {
		return usageErrorf(c, "--environment: %v", err)
	}
	if req.Name != "" {
		if err := api.ValidateName("agent", req.Name); err != nil {
			return usageErrorf(c, "--name: %v", err)
		}
	}
	return nil
}

// newAgentsSetAddressCmd is "agents set-address": a listening agent that
// moved keeps its name, history and certificate.
func newAgentsSetAddressCmd(e Env, t *targetFlags) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "set-address NAME HOST:PORT",
		Short: "Move a listening agent: the coordinator dials it at HOST:PORT from now on",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageErrorf(c, "want an agent name and its new HOST:PORT, got %d arguments", len(args))
			}
			if err := protocol.ValidateAddress(args[1]); err != nil {
				return usageErrorf(c, "%v", err)
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, *t, e, func(ctx context.Context, cl *client.Client) error {
				v, err := cl.SetAgentAddress(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, v)
				}
				_, err = fmt.Fprintf(e.Stdout, "Agent %s moved: the coordinator dials %s from now on.\n", v.Name, v.Address)
				return err
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the agent as JSON")
	return c
}
