package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/server"
)

// usageError is a command line the command cannot run: exit code 2, and a
// pointer to the help of the command concerned.
type usageError struct {
	err error
	cmd string // command path, e.g. "tendril-server agents list"
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return e.err.Error()
	}
	return fmt.Sprintf("%v (see \"%s --help\")", e.err, e.cmd)
}

func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(c *cobra.Command, format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...), cmd: c.CommandPath()}
}

// errorLine is how every failure is reported: one line, so scripts and
// people both see the whole reason in the last line of output.
func errorLine(err error) string {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	return "tendril-server: " + msg
}

func writeInit(w io.Writer, res server.InitResult) error {
	_, err := fmt.Fprintf(w, `Initialized a coordinator in %[1]s.
Thumbprint:    %[2]s
Admin API key: %[3]s
The admin key is also in %[4]s (readable only by you); admin commands given --data %[1]s use it.
Start the coordinator with: tendril-server run --data %[1]s
`, res.DataDir, res.Thumbprint, res.AdminKey, strings.TrimSuffix(res.DataDir, "/")+"/"+server.AdminKeyFile)
	return err
}

// writeJSON prints v the way the API does: indented, one trailing newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Join strings carry '&'; escaping it for HTML only makes them
	// harder to copy.
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeRawJSON prints a JSON document as received, only re-indented, so
// that fields this build does not know are passed on.
func writeRawJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("format response: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// writeAgents prints the agents table, then one line per agent whose
// health needs attention, saying why (a legacy TLS version, low disk...).
func writeAgents(w io.Writer, agents []server.AgentView, now time.Time) error {
	if len(agents) == 0 {
		_, err := fmt.Fprintln(w, "No agents yet. Enroll one with \"tendril-server token create --environment ENV\" and \"tendril-agent register --join JOIN\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENVIRONMENT\tVERSION\tCONNECTED\tHEALTH\tTLS\tCALAMARI\tUPGRADE\tLAST SEEN")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			a.Name, dash(a.Environment), dash(a.Version), yesNo(a.Connected), dash(a.Health),
			dash(a.TLSVersion), calamariCell(a), upgradeCell(a.Upgrade), lastSeen(a, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, a := range agents {
		if (a.Health == "warning" || a.Health == "unhealthy") && a.HealthDetail != "" {
			notes = append(notes, fmt.Sprintf("%s (%s): %s", a.Name, a.Health, a.HealthDetail))
		}
	}
	if len(notes) > 0 {
		_, err := fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "\n"))
		return err
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func calamariCell(a server.AgentView) string {
	v := dash(a.CalamariVersion)
	if !a.CalamariCurrent {
		v += " (out of date)"
	}
	return v
}

func upgradeCell(u string) string {
	if u == server.UpgradeNone {
		return "-"
	}
	return dash(u)
}

// lastSeen is relative because the question it answers is "how long has
// this agent been gone"; a connected agent is being seen now.
func lastSeen(a server.AgentView, now time.Time) string {
	if a.Connected {
		return "now"
	}
	if a.LastSeen == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339, a.LastSeen)
	if err != nil {
		return a.LastSeen
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// writeRotation reports a rotation. previousServed says whether the
// coordinator still serves the previous certificate (it retires it at once
// when every agent already trusts the new one).
func writeRotation(w io.Writer, r server.RotationResult, previousServed bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Coordinator certificate rotated.\n")
	fmt.Fprintf(&b, "Thumbprint: %s\n", r.Thumbprint)
	if previousServed {
		fmt.Fprintf(&b, "Previous:   %s (still served to agents that have not learned the new one)\n", r.Previous)
	} else {
		fmt.Fprintf(&b, "Previous:   %s (retired: every agent trusts the new one)\n", r.Previous)
	}
	fmt.Fprintf(&b, "Connected agents told: %d.", r.Notified)
	if len(r.Failed) > 0 {
		fmt.Fprintf(&b, " Not reached: %s.", strings.Join(r.Failed, ", "))
	}
	fmt.Fprintf(&b, " Agents not reached learn the new thumbprint when they reconnect.\n")
	_, err := io.WriteString(w, b.String())
	return err
}
