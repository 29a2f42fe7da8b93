package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

func newCalamariCmd(e Env) *cobra.Command {
	var t targetFlags
	group := &cobra.Command{
		Use:   "calamari",
		Short: "Calamari bundles: upload, list, and push to agents",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	addTargetFlags(group, &t)

	var pushJSON bool
	push := &cobra.Command{
		Use:   "push FILE",
		Short: "Upload a Calamari bundle (calamari-<version>.tar.gz); the coordinator validates and signs it",
		Args:  oneArg("bundle file"),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCallFor(c, t, e, 0, func(ctx context.Context, cl *client.Client) error {
				var v api.BundleView
				err := uploadFile(e, args[0], func(r upload) error {
					var err error
					v, err = cl.UploadCalamari(ctx, r.r, r.size)
					return err
				})
				if err != nil {
					return err
				}
				if pushJSON {
					return writeJSON(e.Stdout, v)
				}
				return writePushed(e.Stdout, v)
			})
		},
	}
	push.Flags().BoolVar(&pushJSON, "json", false, "print the stored bundle as JSON")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the stored Calamari bundles, newest first",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				bs, err := cl.CalamariBundles(ctx)
				if err != nil {
					return err
				}
				if listJSON {
					return writeJSON(e.Stdout, bs)
				}
				return writeBundles(e.Stdout, bs)
			})
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the GET /api/calamari array")

	var (
		target     api.UpdateTarget
		updateJSON bool
	)
	update := &cobra.Command{
		Use:   "update (--environment ENV | --agent NAME)",
		Short: "Push the latest Calamari bundle to every agent of an environment (or one agent) that lacks it",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if (target.Agent == "") == (target.Environment == "") {
				return usageErrorf(c, "give exactly one of --environment ENV or --agent NAME")
			}
			// Pushes to a large environment take as long as they take; the
			// coordinator bounds how many run at once.
			return adminCallFor(c, t, e, 0, func(ctx context.Context, cl *client.Client) error {
				res, err := cl.UpdateCalamari(ctx, target)
				if err != nil {
					return err
				}
				if updateJSON {
					err = writeJSON(e.Stdout, res)
				} else {
					err = writeUpdateResults(e.Stdout, res)
				}
				if err != nil {
					return err
				}
				return updateOutcome(res)
			})
		},
	}
	f := update.Flags()
	f.StringVar(&target.Environment, "environment", "", "update every agent of this environment")
	f.StringVar(&target.Agent, "agent", "", "update this agent")
	f.BoolVar(&updateJSON, "json", false, "print the results as JSON")

	group.AddCommand(push, list, update)
	return group
}

// updateOutcome turns an update's results into the command's error: exit
// 1 if any agent failed.
func updateOutcome(res []api.UpdateResult) error {
	failed := 0
	for _, r := range res {
		if r.Result == "failed" {
			failed++
		}
	}
	if failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("Calamari update failed on %d of %d agents", failed, len(res))}
	}
	return nil
}

// upload is a file being sent: its reader (counted by a progress bar on a
// terminal) and its size.
type upload struct {
	r    io.Reader
	size int64
}

// uploadFile opens path and hands it to send, with a progress bar on
// stderr when stderr is a terminal.
func uploadFile(e Env, path string, send func(upload) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("upload %s: not a regular file", path)
	}
	r, done := progressReader(e, f, st.Size(), "uploading "+filepath.Base(path))
	err = send(upload{r: r, size: st.Size()})
	done()
	return err
}
