package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/agent/diagnostics"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/version"
)

// diagnosticsCommand writes the agent's diagnostics archive. It reads the
// home only, so it works when the agent cannot start; --out can name
// another disk when the home's is full.
func diagnosticsCommand() *cobra.Command {
	var (
		home, out string
		wait      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "diagnostics",
		Short: "Write a diagnostics archive of this agent (.tar.gz): logs, versions, redacted registration, certificates, upgrade and task history, Calamari, disk space, goroutines",
		Long: `Write a diagnostics archive of this agent, a .tar.gz with a manifest.json
that lists every entry (what it is, its size and SHA-256, when it was
collected) and everything that could not be collected, with why.

It holds the agent's logs (HOME/Logs), versions, agent.json with the proxy
credentials and anything else secret replaced by xxxxx, each certificate's
subject, thumbprint and expiry, the upgrade state, task summaries (never
their arguments or output), the Calamari versions and whether each
verifies, the free disk space and, when the agent runs (Unix), its
goroutine dump, which it writes to HOME/Logs/goroutines-PID.txt when sent
SIGUSR1. It never holds a private key, the enrollment token or a password.

It only reads the home: it works when the agent cannot start, and --out can
put the archive on another disk when the home's is full.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireHome(home); err != nil {
				return err
			}
			abs, err := filepath.Abs(home)
			if err != nil {
				return fmt.Errorf("--home: %w", err)
			}
			if err := diagnostics.CheckHome(abs); err != nil {
				return err
			}
			if out == "" {
				host, _ := os.Hostname()
				out = fmt.Sprintf("tendril-agent-diagnostics-%s-%s.tar.gz", host, time.Now().UTC().Format("20060102T150405Z"))
			}
			var m diag.Manifest
			err = diag.WriteFile(out, func(w io.Writer) error {
				var err error
				m, err = diagnostics.Collect(cmd.Context(), w, diagnostics.Config{
					Home: abs, Tool: diag.ThisTool("tendril-agent", version.Version), DumpWait: wait,
				})
				return err
			})
			if err != nil {
				return err
			}
			return printManifest(cmd.OutOrStdout(), out, m)
		},
	}
	addHome(cmd, &home)
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "archive to write (default: tendril-agent-diagnostics-HOST-TIME.tar.gz in the current folder)")
	f.DurationVar(&wait, "dump-wait", 10*time.Second, "how long a running agent has to write its goroutine dump")
	return cmd
}

// printManifest says where the archive is, what it holds, and what could
// not be collected.
func printManifest(w io.Writer, path string, m diag.Manifest) error {
	fmt.Fprintf(w, "Wrote %s: %d entries.\n", path, len(m.Entries))
	for _, n := range m.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	for _, ms := range m.Missing {
		fmt.Fprintf(w, "Not collected: %s: %s\n", ms.Name, ms.Error)
	}
	return nil
}
