package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/api/client"
)

func newExportCmd(e Env) *cobra.Command {
	var (
		t   targetFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "export --out FILE",
		Short: "Write every agent package and Calamari bundle, signed, to a file for a coordinator with no network",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out == "" {
				return usageErrorf(c, "give --out FILE")
			}
			return adminCallFor(c, t, e, 0, func(ctx context.Context, cl *client.Client) error {
				n, err := writeExport(ctx, cl, out)
				if err != nil {
					return err
				}
				in, err := cl.Info(ctx)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(e.Stdout, "exported to %s (%d bytes); import it with:\n  tendril-server import %s --source-key %s\n",
					out, n, filepath.Base(out), in.SigningKey)
				return err
			})
		},
	}
	addTargetFlags(cmd, &t)
	cmd.Flags().StringVar(&out, "out", "", "file to write (replaced only once complete)")
	return cmd
}

// writeExport writes the export to a temporary file next to out and
// renames it into place once complete, so that a failed export never
// leaves a file that looks whole.
func writeExport(ctx context.Context, cl *client.Client, out string) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	defer tmp.Close()
	if err := cl.Export(ctx, tmp); err != nil {
		return 0, err
	}
	n, err := tmp.Seek(0, io.SeekCurrent)
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	return n, nil
}

func newImportCmd(e Env) *cobra.Command {
	var (
		t      targetFlags
		opts   api.ImportOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Check an export file's signatures and hashes, then store its agent packages and Calamari bundles here",
		Args:  oneArg("export file"),
		RunE: func(c *cobra.Command, args []string) error {
			if opts.SourceKey == "" && !opts.TrustAnySource {
				return usageErrorf(c, "give --source-key KEY (the exporting coordinator's signing key, from \"tendril-server info\" there), or --trust-any-source")
			}
			return adminCallFor(c, t, e, 0, func(ctx context.Context, cl *client.Client) error {
				var res api.ImportResult
				err := uploadFile(e, args[0], func(r upload) error {
					var err error
					res, err = cl.Import(ctx, r.r, r.size, opts)
					return err
				})
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, res)
				}
				return writeImport(e.Stdout, res)
			})
		},
	}
	addTargetFlags(cmd, &t)
	f := cmd.Flags()
	f.BoolVar(&opts.AllowDowngrade, "allow-downgrade", false, "store items older than what the fleet runs (a backup snapshot is taken first)")
	f.StringVar(&opts.SourceKey, "source-key", "", "the exporting coordinator's signing key (tendril-server info there): the file is refused unless it signed it")
	f.BoolVar(&opts.TrustAnySource, "trust-any-source", false, "import without --source-key: the file is still checked whole, but nothing says which coordinator made it")
	f.BoolVar(&opts.BackedUp, "backed-up", false, "with --allow-downgrade on PostgreSQL: the database was backed up with its own tools")
	f.BoolVar(&asJSON, "json", false, "print the POST /api/import answer")
	return cmd
}

func newInfoCmd(e Env) *cobra.Command {
	var (
		t      targetFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Describe the running coordinator: version, certificate thumbprints, signing key, addresses",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, t, e, func(ctx context.Context, cl *client.Client) error {
				in, err := cl.Info(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.Stdout, in)
				}
				_, err = fmt.Fprintf(e.Stdout, "Version:      %s\nNode:         %s\nThumbprints:  %s\nSigning key:  %s\nAgent port:   %s\nConnected:    %d\n",
					in.Version, in.Node, strings.Join(in.Thumbprints, ", "), in.SigningKey, in.AgentAddr, in.Connected)
				return err
			})
		},
	}
	addTargetFlags(cmd, &t)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the GET /api/server answer")
	return cmd
}

// writeImport prints one line per item and what the signatures mean.
func writeImport(w io.Writer, res api.ImportResult) error {
	failed := 0
	for _, it := range res.Items {
		name := "Calamari " + it.Version
		if it.Kind == "agent" {
			name = fmt.Sprintf("agent %s %s/%s", it.Version, it.OS, it.Arch)
		}
		line := fmt.Sprintf("%-30s %s", name, it.Result)
		if it.Error != "" {
			line += ": " + it.Error
			failed++
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	var lines []string
	if res.Snapshot != "" {
		lines = append(lines, fmt.Sprintf("copy of the database taken before the downgrade: %s (in the data folder)", res.Snapshot))
	}
	lines = append(lines, fmt.Sprintf("checked with the key %s that signed the file (coordinator version %s); stored signed with this coordinator's key %s, which its agents pinned at enrollment",
		res.SourceKey, res.SourceVersion, res.SigningKey))
	if len(res.Refusing) > 0 {
		lines = append(lines, "these agents pinned another signing key and will refuse them, as everything signed here, until registered again with --force: "+
			strings.Join(res.Refusing, ", "))
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d items failed", failed, len(res.Items))
	}
	return nil
}
