package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tendrildeploy/tendril/bytesize"

	"github.com/spf13/cobra"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
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

// exitError ends a command with a given exit code: a task's, or 130 after
// an interrupt. msg, if not empty, is printed as the failure line.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErrorf(c *cobra.Command, format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...), cmd: c.CommandPath()}
}

// errorLine is how every failure is reported: one line, so scripts and
// people both see the whole reason in the last line of output.
func errorLine(err error) string {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	return "tendril-server: " + msg
}

func writeInit(w io.Writer, res datadir.InitResult) error {
	_, err := fmt.Fprintf(w, `Initialized a coordinator in %[1]s.
Thumbprint:    %[2]s
Admin API key: %[3]s
The admin key is also in %[4]s (readable only by you); admin commands given --data %[1]s use it.
Start the coordinator with: tendril-server run --data %[1]s
`, res.DataDir, res.Thumbprint, res.AdminKey, strings.TrimSuffix(res.DataDir, "/")+"/"+api.AdminKeyFile)
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
// health needs attention, saying why (a legacy TLS version, low disk...),
// and per listening agent the coordinator could not dial, saying why.
func writeAgents(w io.Writer, agents []api.AgentView, now time.Time) error {
	if len(agents) == 0 {
		_, err := fmt.Fprintln(w, "No agents yet. Enroll one with \"tendril-server token create --environment ENV\" and \"tendril-agent register --join JOIN\", "+
			"or add a listening one with \"tendril-server agents add --listening HOST:PORT\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENVIRONMENT\tMODE\tVERSION\tCONNECTED\tHEALTH\tTLS\tCALAMARI\tUPGRADE\tLAST SEEN")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			a.Name, dash(a.Environment), dash(a.Mode), dash(a.Version), yesNo(a.Connected), dash(a.Health),
			dash(a.TLSVersion), calamariCell(a), upgradeCell(a), lastSeen(a, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, a := range agents {
		switch {
		case (a.Health == "warning" || a.Health == "unhealthy") && a.HealthDetail != "":
			notes = append(notes, fmt.Sprintf("%s (%s): %s", a.Name, a.Health, a.HealthDetail))
		case (a.NodeState == api.NodeDead || a.NodeState == api.NodeStopped) && a.HealthDetail != "":
			// Its session went with a coordinator node.
			notes = append(notes, fmt.Sprintf("%s (%s): %s", a.Name, a.Health, a.HealthDetail))
		case a.DialError != "":
			notes = append(notes, fmt.Sprintf("%s (listening at %s): the coordinator cannot connect: %s", a.Name, a.Address, a.DialError))
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

func calamariCell(a api.AgentView) string {
	v := dash(a.CalamariVersion)
	if !a.CalamariCurrent {
		v += " (out of date)"
	}
	return v
}

func upgradeCell(a api.AgentView) string {
	switch {
	case a.Upgrade == api.UpgradeNone:
		return "-"
	case a.Upgrade == api.UpgradeRecommended && a.UpgradeTo != "":
		return fmt.Sprintf("recommended (%s)", a.UpgradeTo)
	}
	return dash(a.Upgrade)
}

// lastSeen is relative because the question it answers is "how long has
// this agent been gone"; a connected agent is being seen now.
func lastSeen(a api.AgentView, now time.Time) string {
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
func writeRotation(w io.Writer, r api.RotationResult, previousServed bool) error {
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
	if len(r.Behind) > 0 {
		fmt.Fprintf(&b, "Away since before the last rotation too: %s. They know neither certificate served now, and get in by the new one's endorsement by the signing key.\n", strings.Join(r.Behind, ", "))
	}
	if len(r.Stranded) > 0 {
		fmt.Fprintf(&b, "Locked out (too old to check an endorsement): %s. Register each again: tendril-agent register --home DIR --join JOIN --force\n", strings.Join(r.Stranded, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writePushed reports an uploaded Calamari bundle.
func writePushed(w io.Writer, v api.BundleView) error {
	var err error
	switch {
	case !v.Created:
		_, err = fmt.Fprintf(w, "Calamari %s was already stored\n", v.Version)
	case v.Latest:
		_, err = fmt.Fprintf(w, "stored Calamari %s (latest)\n", v.Version)
	default:
		_, err = fmt.Fprintf(w, "stored Calamari %s (not the latest: a newer version is stored)\n", v.Version)
	}
	return err
}

// writeBundles prints the Calamari bundles table.
func writeBundles(w io.Writer, bs []api.BundleView) error {
	if len(bs) == 0 {
		_, err := fmt.Fprintln(w, "No Calamari bundles yet. Build one with \"make build\" and upload it with \"tendril-server calamari push dist/calamari-<version>.tar.gz\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tLATEST\tPLATFORMS\tSIZE\tUPLOADED")
	for _, b := range bs {
		latest := "-"
		if b.Latest {
			latest = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Version, latest, dash(strings.Join(b.Platforms, ",")),
			bytesize.Format(b.Size), b.UploadedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// writeUpdateResults prints one line per agent of a manual Calamari
// update.
func writeUpdateResults(w io.Writer, res []api.UpdateResult) error {
	if len(res) == 0 {
		_, err := fmt.Fprintln(w, "No agents to update.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range res {
		switch r.Result {
		case "installed":
			fmt.Fprintf(tw, "%s\tinstalled %s\n", r.Agent, r.Version)
		case "failed":
			fmt.Fprintf(tw, "%s\tfailed: %s\n", r.Agent, dash(r.Error))
		default:
			fmt.Fprintf(tw, "%s\t%s\n", r.Agent, r.Result)
		}
	}
	return tw.Flush()
}

// writeTasks prints the tasks table.
func writeTasks(w io.Writer, ts []api.TaskView) error {
	if len(ts) == 0 {
		_, err := fmt.Fprintln(w, "No tasks yet. Run one with \"tendril-server task run --agent NAME -- run-script --inline 'echo hello'\".")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGENT\tSTATE\tEXIT\tCALAMARI\tCREATED\tARGS")
	for _, t := range ts {
		exit := "-"
		if t.FinishedAt != nil {
			exit = fmt.Sprint(t.ExitCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Agent, t.State, exit, dash(t.Calamari),
			t.CreatedAt.UTC().Format(time.RFC3339), truncate(api.QuoteArgs(t.Args), 60))
	}
	return tw.Flush()
}

// writeTaskHeader prints what task show says before the log.
func writeTaskHeader(w io.Writer, t api.TaskView) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Task:      %s\n", t.ID)
	fmt.Fprintf(&b, "Agent:     %s\n", t.Agent)
	fmt.Fprintf(&b, "State:     %s\n", stateText(t))
	if t.StateReason != "" && !t.Finished() {
		fmt.Fprintf(&b, "Held up:   %s\n", t.StateReason)
	}
	if t.Error != "" && t.Error != t.State {
		fmt.Fprintf(&b, "Error:     %s\n", t.Error)
	}
	if w := t.LostWarning(); w != "" {
		fmt.Fprintf(&b, "Warning:   %s\n", w)
	}
	fmt.Fprintf(&b, "Calamari:  %s\n", dash(t.Calamari))
	fmt.Fprintf(&b, "Args:      %s\n", api.QuoteArgs(t.Args))
	if t.File != "" {
		fmt.Fprintf(&b, "File:      %s\n", t.File)
	}
	if t.Isolation != "" { // "" from a coordinator older than isolation
		fmt.Fprintf(&b, "Isolation: %s\n", t.Isolation)
	}
	if len(t.Locks) > 0 {
		fmt.Fprintf(&b, "Locks:     %s\n", strings.Join(t.Locks, ", "))
	}
	fmt.Fprintf(&b, "Created:   %s\n", t.CreatedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Started:   %s\n", timeCell(t.StartedAt))
	finished := timeCell(t.FinishedAt)
	if t.StartedAt != nil && t.FinishedAt != nil {
		finished += fmt.Sprintf(" (took %s)", t.FinishedAt.Sub(*t.StartedAt).Round(time.Second))
	}
	fmt.Fprintf(&b, "Finished:  %s\n", finished)
	for _, v := range t.Variables {
		value := strconv.Quote(v.Value)
		if v.Sensitive {
			value = "(sensitive)"
		}
		fmt.Fprintf(&b, "Variable:  %s = %s\n", v.Name, value)
	}
	for _, name := range slices.Sorted(maps.Keys(t.Outputs)) {
		fmt.Fprintf(&b, "Output:    %s = %s\n", name, strconv.Quote(t.Outputs[name]))
	}
	for _, a := range t.Artifacts {
		fmt.Fprintf(&b, "Artifact:  %s (%s; tendril-server task artifact %s %s)\n", a.Name, bytesize.Format(a.Size), t.ID, api.QuoteArgs([]string{a.Name}))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func timeCell(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// stateText is a task's state with its exit code once that means
// something.
func stateText(t api.TaskView) string {
	switch {
	case t.State == protocol.TaskSucceeded:
		return fmt.Sprintf("%s (exit code %d)", t.State, t.ExitCode)
	case t.State == protocol.TaskFailed && t.ExitCode > 0:
		return fmt.Sprintf("%s (exit code %d)", t.State, t.ExitCode)
	case t.WaitingFor != "":
		return fmt.Sprintf("%s (%s)", t.State, t.WaitingFor)
	}
	return t.State
}

// taskOutcome is how a finished task is summed up on one line. A failure
// with an exit code is explained by it; one without says why.
func taskOutcome(t api.TaskView) string {
	s := stateText(t)
	if t.State == protocol.TaskFailed && t.ExitCode <= 0 && t.Error != "" {
		s += ": " + t.Error
	}
	return s
}

// taskExitCode maps a finished task to the exit code of task run: the
// task's own when it failed with one a process can exit with, 1 when it
// failed without one (refused before it started, say), 130 (as for
// Ctrl-C) when it was cancelled.
func taskExitCode(t api.TaskView) int {
	switch t.State {
	case protocol.TaskSucceeded:
		return 0
	case protocol.TaskCancelled:
		return 130
	case protocol.TaskFailed:
		if t.ExitCode > 0 && t.ExitCode < 256 {
			return t.ExitCode
		}
	}
	return 1
}

// formatLogLine is one log line as task run and task show print it, with
// the prefix (the agent's name when several agents' logs interleave) on
// each of its lines.
func formatLogLine(prefix, text string) string {
	if prefix == "" {
		return text + "\n"
	}
	var b strings.Builder
	for line := range strings.SplitSeq(text, "\n") {
		b.WriteString(prefix)
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// truncate shortens s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-3]) + "..."
}
