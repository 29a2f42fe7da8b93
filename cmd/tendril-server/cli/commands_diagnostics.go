package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api/client"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/server/diagnostics"
	"github.com/tendrildeploy/tendril/version"
)

// newDiagnosticsCmd is "diagnostics": the coordinator's own archive,
// collected on its host from its data folder, running or not.
func newDiagnosticsCmd(e Env) *cobra.Command {
	var (
		data, database, out string
		asJSON              bool
	)
	c := &cobra.Command{
		Use:   "diagnostics --data DIR [--out FILE]",
		Short: "Write a diagnostics archive of this coordinator (.tar.gz): versions, redacted configuration, certificates, log, nodes, agents, goroutines",
		Long: `Write a diagnostics archive of the coordinator in DIR, running or not: a
.tar.gz with a manifest.json that lists every entry (what it is, its size
and SHA-256, when it was collected) and what could not be collected, with
why.

It holds the versions, run.json, the database it uses (a PostgreSQL
database as user@host:port/name, never its password), its certificates' subjects, thumbprints and expiry
and the signing key's public half, the data folder's listing, its log
(DIR/server.log, if it logs there), and, from a running coordinator (found
through DIR/run.json and asked with DIR/admin.key), its nodes, its agents
and its goroutine dump; with none running, the nodes and agents are read
from a copy of its SQLite database. It never holds a private key, the
admin key, an API key, a token or a password.

For one agent's diagnostics, see "tendril-server agents diagnostics NAME".`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := dataDir(c, data, e)
			if err != nil {
				return err
			}
			if err := diagnostics.CheckDataDir(dir); err != nil {
				return err
			}
			dbURL, err := databaseURL(dir, database, e)
			if err != nil {
				return err
			}
			cfg := diagnostics.CoordinatorConfig{DataDir: dir, Database: dbURL,
				Tool: diag.ThisTool("tendril-server", version.Version)}
			if cl, err := client.FromDataDir(dir); err != nil {
				cfg.LiveErr = err
			} else {
				defer cl.CloseIdleConnections()
				cfg.Live = cl
			}
			if out == "" {
				out = diagnosticsName("tendril-server-diagnostics", hostname())
			}
			var m diag.Manifest
			err = diag.WriteFile(out, func(w io.Writer) error {
				var err error
				m, err = diagnostics.Coordinator(c.Context(), w, cfg)
				return err
			})
			if err != nil {
				return err
			}
			return writeDiagnostics(e.Stdout, out, m, asJSON)
		},
	}
	f := c.Flags()
	f.StringVar(&data, "data", "", "the coordinator's data folder (default $"+envData+")")
	f.StringVar(&database, "database", "", "the PostgreSQL URL the coordinator runs with, named in the archive as user@host:port/name (default $"+envDatabase+")")
	f.StringVar(&out, "out", "", "archive to write (default: tendril-server-diagnostics-HOST-TIME.tar.gz in the current folder)")
	f.BoolVar(&asJSON, "json", false, "print the archive's manifest as JSON")
	return c
}

// newAgentsDiagnosticsCmd is "agents diagnostics NAME": the agent's
// archive as the coordinator collects it over the agent's session, with
// the coordinator's view of the agent.
func newAgentsDiagnosticsCmd(e Env, t *targetFlags) *cobra.Command {
	var (
		out    string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "diagnostics NAME [--out FILE]",
		Short: "Collect an agent's diagnostics archive (.tar.gz) through the coordinator",
		Long: `Collect an agent's diagnostics archive through the coordinator: the
coordinator's side (the agent's record, recent health, tasks and upgrade
history, the coordinator's version) and, as agent/diagnostics.tar.gz, the
agent's own archive, which the agent sends over its session (what
"tendril-agent diagnostics" writes on its machine, with its goroutine dump).

An agent that is not connected, or too old to collect one, still gets the
coordinator's side; the archive's notes, printed here, say why the agent's
is missing.`,
		Args: oneArg("agent name"),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			if out == "" {
				out = diagnosticsName("tendril-diagnostics", name)
			}
			return adminCall(c, *t, e, func(ctx context.Context, cl *client.Client) error {
				if err := diag.WriteFile(out, func(w io.Writer) error {
					_, err := cl.AgentDiagnostics(ctx, name, w)
					return err
				}); err != nil {
					return err
				}
				f, err := os.Open(out)
				if err != nil {
					return err
				}
				defer f.Close()
				// The manifest only: the archive may be hundreds of MiB.
				m, err := diag.ReadManifest(f)
				if err != nil {
					return fmt.Errorf("read %s: %w", out, err)
				}
				return writeDiagnostics(e.Stdout, out, m, asJSON)
			})
		},
	}
	c.Flags().StringVar(&out, "out", "", "archive to write (default: tendril-diagnostics-NAME-TIME.tar.gz in the current folder)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the archive's manifest as JSON")
	return c
}

// diagnosticsName is a default archive name: prefix, subject and time.
func diagnosticsName(prefix, subject string) string {
	subject = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ':' || r < ' ' {
			return '_'
		}
		return r
	}, subject)
	return fmt.Sprintf("%s-%s-%s.tar.gz", prefix, subject, time.Now().UTC().Format("20060102T150405Z"))
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "coordinator"
	}
	return h
}

// writeDiagnostics says where an archive is, what its notes say and what
// could not be collected; or prints its manifest.
func writeDiagnostics(w io.Writer, path string, m diag.Manifest, asJSON bool) error {
	if asJSON {
		return writeJSON(w, struct {
			File     string        `json:"file"`
			Manifest diag.Manifest `json:"manifest"`
		}{path, m})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Wrote %s: %d entries.\n", path, len(m.Entries))
	for _, n := range m.Notes {
		fmt.Fprintf(&b, "Note: %s\n", n)
	}
	for _, ms := range m.Missing {
		fmt.Fprintf(&b, "Not collected: %s: %s\n", ms.Name, ms.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
