// Package diagnostics collects an agent's diagnostics archive (package
// diag) from its home folder: its logs, versions, redacted registration,
// certificates (subject, thumbprint and expiry, never a key), upgrade
// state, task summaries, Calamari state, free disk space and, from a
// running agent, a goroutine dump.
//
// It reads the home and nothing else, and never writes to it, so that it
// works when the agent cannot start (a corrupt agent.json, a bad
// certificate) and when the home's disk is full (the archive goes
// elsewhere): what cannot be read is recorded in the manifest with the
// error, and collection goes on. The running agent collects through the
// same code when its coordinator asks (see Live); from the command line,
// a running agent is asked for its goroutine dump with SIGUSR1 (see
// ServeDumps).
package diagnostics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/agent/calamari"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/proxy"
)

// Names inside the home folder, as package agent lays it out. They are the
// agent's contract with its own earlier and later versions, so they do
// not change; this package reads them without importing the agent, which
// imports it.
const (
	stateFile   = "agent.json"
	certsDir    = "certs"
	calamariDir = "Calamari"
	workDir     = "Work"
	logsDir     = "Logs"
	lockFile    = "agent.lock"
	agentLog    = "agent.log"
)

// Bounds on what an archive holds, well below what a coordinator accepts
// (protocol.MaxDiagnosticsSize) even before compression.
const (
	// logLimit is the most of one log file kept: the newest part of a
	// current log (rotated at 10 MiB, so normally all of it).
	logLimit = 32 << 20
	// logsBudget is the most of the Logs folder kept, newest files first.
	logsBudget = 96 << 20
	// maxTasks is how many task summaries are kept, the newest.
	maxTasks = 200
	// defaultDumpWait is how long a running agent has to write its
	// goroutine dump.
	defaultDumpWait = 10 * time.Second
)

// ErrNoHome means the folder given is not an agent home: it does not
// exist, or holds nothing an agent keeps. No archive is written.
var ErrNoHome = errors.New("no agent home")

// Config says what to collect.
type Config struct {
	// Home is the agent's home folder. Required.
	Home string
	// Tool is the program collecting, named in the manifest.
	Tool diag.Tool
	// Live is set when the running agent collects for its coordinator:
	// what only the running process knows. Nil from the command line,
	// where a running agent is found by its home's lock and asked for its
	// goroutine dump.
	Live *Live
	// DumpWait bounds the wait for a running agent's goroutine dump.
	// Default 10s.
	DumpWait time.Duration
}

// Live is what a running agent adds about itself.
type Live struct {
	// Version is the running agent's version.
	Version string
	// Status is its connection as it sees it (agent.Status and more),
	// stored as JSON.
	Status any
	// Goroutines is its goroutine dump (diag.Goroutines).
	Goroutines []byte
}

// CheckHome returns an error wrapping ErrNoHome when home does not exist,
// is not a folder, or holds none of the files an agent keeps, so that a
// mistyped --home is refused before any archive is made.
func CheckHome(home string) error {
	st, err := os.Stat(home)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s does not exist (give the folder the agent was registered with: --home or $TENDRIL_AGENT_HOME)", ErrNoHome, home)
	}
	if err != nil {
		return fmt.Errorf("agent home %s: %w", home, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", ErrNoHome, home)
	}
	for _, name := range []string{stateFile, certsDir, calamariDir, workDir, logsDir, lockFile} {
		if _, err := os.Lstat(filepath.Join(home, name)); !errors.Is(err, fs.ErrNotExist) {
			return nil // there, or there but unreadable: a home either way
		}
	}
	return fmt.Errorf("%w: %s holds none of %s, %s, %s, %s or %s", ErrNoHome, home, stateFile, certsDir, calamariDir, workDir, logsDir)
}

// Collect writes the diagnostics archive of cfg.Home to w and returns its
// manifest. It fails before writing anything when the home is not one
// (ErrNoHome), and otherwise only when the archive cannot be written.
func Collect(ctx context.Context, w io.Writer, cfg Config) (diag.Manifest, error) {
	if cfg.Home == "" {
		return diag.Manifest{}, errors.New("collect diagnostics: no agent home given")
	}
	home, err := filepath.Abs(cfg.Home)
	if err != nil {
		return diag.Manifest{}, fmt.Errorf("collect diagnostics: %w", err)
	}
	if err := CheckHome(home); err != nil {
		return diag.Manifest{}, err
	}
	if cfg.DumpWait <= 0 {
		cfg.DumpWait = defaultDumpWait
	}
	c := &collector{ctx: ctx, home: home, cfg: cfg, dw: diag.NewWriter(w, diag.KindAgent, home, cfg.Tool), now: time.Now()}
	return c.dw.Collect(ctx, c.versions, c.config, c.certificates, c.goroutines, c.logs,
		c.upgrade, c.tasks, c.calamari, c.disk, c.listing, c.status)
}

// collector is one collection in progress.
type collector struct {
	ctx  context.Context
	home string
	cfg  Config
	dw   *diag.Writer
	now  time.Time
	// signingKey is the coordinator's public key from agent.json, "" if
	// it could not be read: Calamari is verified against it.
	signingKey string
	// pid is the running agent's process, 0 if none was found;
	// dumpFile is the goroutine dump taken from it, left out of logs/.
	pid      int
	running  bool
	dumpFile string
}

func (c *collector) path(elem ...string) string {
	return filepath.Join(append([]string{c.home}, elem...)...)
}

// versions records the collecting binary's version and the running
// agent, if any.
func (c *collector) versions() error {
	type runningAgent struct {
		Running bool   `json:"running"`
		PID     int    `json:"pid,omitempty"`
		Version string `json:"version,omitempty"`
		// How is how that was found out.
		How string `json:"how"`
	}
	var ra runningAgent
	switch {
	case c.cfg.Live != nil:
		c.running, c.pid = true, os.Getpid()
		ra = runningAgent{Running: true, PID: c.pid, Version: c.cfg.Live.Version, How: "collected by the running agent itself"}
	default:
		pid, ok, err := runningPID(c.home)
		c.running, c.pid = ok, pid
		ra = runningAgent{Running: ok, PID: pid, How: "the lock on " + lockFile + " (held while an agent runs)"}
		if noDumps != "" {
			ra.How = "not known: the home is not locked on this system"
		}
		if err != nil {
			ra.How = err.Error()
		}
	}
	return c.dw.AddJSON("versions.json", "the collecting binary's version, Go version and platform, and the agent running on this home, if any", struct {
		Collector diag.Tool    `json:"collector"`
		Agent     runningAgent `json:"agent"`
	}{c.cfg.Tool, ra})
}

// stateFields are the fields of agent.json (agent.State) that config
// copies, redacted as text (a ws:// server address with credentials). It
// is an allow-list: any other field, one a later version adds or one
// written by hand, may hold anything, so its value is replaced by
// diag.Redacted. TestConfigKeepsStateFields checks every field of
// agent.State is here.
var stateFields = map[string]bool{
	"agent_id": true, "name": true, "environment": true, "servers": true, "learned_servers": true,
	"server_thumbprints": true, "server_hint": true, "signing_key": true, "registered_at": true,
	"proxy": true, "listen": true,
}

// maxStateSize bounds agent.json as read: a registration is a few KiB.
const maxStateSize = 1 << 20

// config copies agent.json with every secret hidden: the proxy's
// credentials (proxy.Redact), the value of every field not known to hold
// nothing secret (stateFields), and in the others what diag.RedactString
// hides. A file that is not JSON is left out: it cannot be redacted field
// by field.
func (c *collector) config() error {
	const name, desc = "config/agent.json", "the agent's registration (agent.json), secrets and unknown fields replaced by " + diag.Redacted
	b, err := diag.ReadFileInside(c.home, stateFile, maxStateSize)
	if errors.Is(err, fs.ErrNotExist) {
		c.dw.Note("%s is missing: the home is not registered and the agent cannot start (tendril-agent register)", stateFile)
		c.dw.Missing(name, desc, err)
		return nil
	}
	if err != nil {
		c.dw.Missing(name, desc, err)
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		if err == nil {
			err = errors.New("not a JSON object")
		}
		err = fmt.Errorf("%d bytes that are not valid JSON (%s): left out, as they cannot be redacted", len(b), jsonProblem(err))
		c.dw.Note("%s is not valid JSON: the agent cannot start; register it again with --force", stateFile)
		c.dw.Missing(name, desc, err)
		return nil
	}
	if k, ok := m["signing_key"].(string); ok {
		c.signingKey = k
	}
	servers, _ := m["servers"].([]any)
	thumbs, _ := m["server_thumbprints"].([]any)
	if listen, _ := m["listen"].(string); len(servers) == 0 && listen == "" || len(thumbs) == 0 {
		c.dw.Note("%s names no coordinator address or thumbprint: the agent cannot start; register it again with --force", stateFile)
	}
	return c.dw.AddJSON(name, desc, redactState(m))
}

// redactState is agent.json as config copies it.
func redactState(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch p, _ := v.(string); {
		case !stateFields[k]:
			if v != nil {
				v = diag.Redacted
			}
		case k == "proxy" && p != "" && p != "none":
			v = diag.RedactString(proxy.Redact(p))
		default:
			v = diag.Redact(v)
		}
		out[k] = v
	}
	return out
}

// jsonProblem says what is wrong with JSON without quoting it: a
// decoder's message can hold a piece of the text, and the text may hold a
// password.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "it ends too early"
	}
	return "not a JSON object"
}

// certificates describes every certificate in certs/ and whether each
// slot's certificate and key load as a pair; keys are listed, never read
// into the archive.
func (c *collector) certificates() error {
	const name, desc = "certificates.json", "the agent's certificates (subject, thumbprint, expiry) and whether each certificate and key load as a pair; never a key"
	dir := c.path(certsDir)
	files, err := diag.ListDir(dir)
	if err != nil && files == nil {
		c.dw.Missing(name, desc, err)
		return nil
	}
	type slot struct {
		Slot        string            `json:"slot"`
		Certificate *diag.Certificate `json:"certificate,omitempty"`
		Key         *diag.FileInfo    `json:"key,omitempty"`
		// Loads is true when the certificate and key load as the
		// agent's identity; Error says why not.
		Loads bool   `json:"loads"`
		Error string `json:"error,omitempty"`
	}
	slots := []slot{}
	seen := map[string]bool{}
	for _, f := range files {
		base, ext := strings.TrimSuffix(f.Name, filepath.Ext(f.Name)), filepath.Ext(f.Name)
		if f.Dir || (ext != ".crt" && ext != ".key") || seen[base] {
			continue
		}
		seen[base] = true
		s := slot{Slot: base}
		crt, key := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
		if _, err := os.Stat(crt); err == nil {
			d := diag.DescribeCertificate(crt, c.now)
			s.Certificate = &d
			if d.Expired {
				c.dw.Note("certificate %s expired at %s", d.File, d.NotAfter.Format(time.RFC3339))
			}
		}
		if i := slices.IndexFunc(files, func(fi diag.FileInfo) bool { return fi.Name == base+".key" }); i >= 0 {
			s.Key = &files[i]
		}
		if _, err := certs.LoadIdentity(crt, key); err != nil {
			s.Error = err.Error()
			if base == "agent" {
				c.dw.Note("the agent's certificate and key do not load (%v): the agent cannot start", err)
			}
		} else {
			s.Loads = true
		}
		slots = append(slots, s)
	}
	if !seen["agent"] {
		c.dw.Note("%s holds no agent.crt and agent.key: the agent cannot start", certsDir)
	}
	out := struct {
		Slots []slot          `json:"slots"`
		Files []diag.FileInfo `json:"files"`
		Error string          `json:"error,omitempty"`
	}{Slots: slots, Files: files}
	if err != nil {
		out.Error = err.Error()
	}
	return c.dw.AddJSON(name, desc, out)
}

// goroutines adds the running agent's goroutine dump: its own when it
// collects, else one it is asked for.
func (c *collector) goroutines() error {
	const desc = "the running agent's goroutines with their stacks"
	switch {
	case c.cfg.Live != nil:
		if len(c.cfg.Live.Goroutines) == 0 {
			c.dw.Missing(diag.GoroutinesName, desc, errors.New("the agent could not dump its goroutines"))
			return nil
		}
		return c.dw.Add(diag.GoroutinesName, desc, c.cfg.Live.Goroutines)
	case noDumps != "":
		c.dw.Note("%s", noDumps)
		return nil
	case !c.running:
		c.dw.Note("no agent is running on this home: no goroutine dump")
		return nil
	case c.pid <= 0:
		// Never signal without a process id: 0 or less would signal a
		// whole process group.
		c.dw.Missing(diag.GoroutinesName, desc, errors.New("an agent runs on this home, but its process id is not known"))
		return nil
	}
	path, err := requestDump(c.ctx, c.home, c.pid, c.cfg.DumpWait)
	if err != nil {
		c.dw.Missing(diag.GoroutinesName, desc, err)
		return nil
	}
	c.dumpFile = filepath.Base(path)
	// The agent's user can replace the file: it is opened as the logs
	// are, following no link.
	return c.dw.AddFile(diag.GoroutinesName, desc, c.home, filepath.Join(logsDir, c.dumpFile), logLimit, true)
}

// logs copies the Logs folder, newest files first, within logsBudget:
// the current logs keep their newest part if larger than logLimit, and
// rotated ones (gzip files) are decompressed, so that a private key a log
// quoted can be cut out, and kept as text, their newest part too. Links
// are left out of the listing and, should one replace a file after it,
// not followed when the file is opened.
func (c *collector) logs() error {
	dir := c.path(logsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.dw.Missing("logs/", "the agent's logs", err)
		return nil
	}
	type logFile struct {
		name string
		info fs.FileInfo
	}
	var files []logFile
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == c.dumpFile || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since the listing (rotated)
		}
		files = append(files, logFile{e.Name(), info})
	}
	slices.SortFunc(files, func(a, b logFile) int { return b.info.ModTime().Compare(a.info.ModTime()) })
	if !slices.ContainsFunc(files, func(f logFile) bool { return f.name == agentLog }) {
		c.dw.Note("no %s in %s: an agent run in the foreground logs to its terminal or its --log-file", agentLog, logsDir)
	}
	left := int64(logsBudget)
	for _, f := range files {
		name := "logs/" + f.name
		desc := "agent log file " + f.name
		compressed := strings.HasSuffix(f.name, ".gz")
		if compressed {
			name = strings.TrimSuffix(name, ".gz")
			desc = "rotated agent log file " + f.name + ", decompressed"
		}
		limit := min(int64(logLimit), left)
		if limit <= 0 {
			c.dw.Missing(name, desc, fmt.Errorf("%d bytes: over the %d bytes of logs an archive holds", f.info.Size(), int64(logsBudget)))
			continue
		}
		before := len(c.dw.Manifest().Entries)
		rel := filepath.Join(logsDir, f.name)
		var err error
		if compressed {
			err = c.dw.AddGzipFile(name, desc, c.home, rel, limit)
		} else {
			err = c.dw.AddFile(name, desc, c.home, rel, limit, true)
		}
		if err != nil {
			return err
		}
		if es := c.dw.Manifest().Entries; len(es) > before {
			left -= es[len(es)-1].Size
		}
	}
	return nil
}

// upgrade adds the last upgrade's state, its command line redacted, and
// what the Upgrade folder holds.
func (c *collector) upgrade() error {
	const name, desc = "upgrade/state.json", "the last agent upgrade and how far it got (Upgrade/state.json), secrets in its command line replaced"
	st, ok, err := upgrade.Load(c.home)
	switch {
	case err != nil:
		c.dw.Missing(name, desc, err)
	case !ok:
		c.dw.Note("no upgrade state: this agent was never upgraded by a coordinator")
	default:
		st.Args = diag.RedactArgs(st.Args, map[string]func(string) string{"proxy": proxy.Redact})
		b, err := json.Marshal(st)
		if err == nil {
			b, err = diag.RedactJSON(b)
		}
		if err != nil {
			c.dw.Missing(name, desc, err)
		} else if err := c.dw.Add(name, desc, b); err != nil {
			return err
		}
	}
	listing := map[string][]diag.FileInfo{}
	for _, sub := range []string{"", "staged", "previous"} {
		if files, err := diag.ListDir(filepath.Join(upgrade.Dir(c.home), sub)); err == nil {
			listing[filepath.ToSlash(filepath.Join("Upgrade", sub))] = files
		}
	}
	if len(listing) == 0 {
		return nil
	}
	return c.dw.AddJSON("upgrade/files.json", "what the Upgrade folder holds: staged packages and the previous binary", listing)
}

// taskInfo and taskResult are the parts of a task's task.json and
// result.json (package agent/task) a summary shows. The arguments are
// left out: a deployment's command line can hold its secrets.
type taskInfo struct {
	Ticket    string    `json:"ticket"`
	Calamari  string    `json:"calamari"`
	StartedAt time.Time `json:"started_at"`
	PID       int       `json:"pid,omitempty"`
}

type taskResult struct {
	State      string    `json:"state"`
	ExitCode   int       `json:"exit_code"`
	Error      string    `json:"error,omitempty"`
	FinishedAt time.Time `json:"finished_at"`
}

// tasks summarizes the newest tasks in Work: when, which Calamari, how
// each ended. Never their arguments, files or logs.
func (c *collector) tasks() error {
	const name, desc = "tasks.json", "the newest tasks on this agent: ticket, Calamari version, start, state, exit code (never their arguments, files or output)"
	dir := c.path(workDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.dw.Missing(name, desc, err)
		return nil
	}
	type found struct {
		name string
		mod  time.Time
	}
	var dirs []found
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if info, err := e.Info(); err == nil {
			dirs = append(dirs, found{e.Name(), info.ModTime()})
		}
	}
	slices.SortFunc(dirs, func(a, b found) int { return b.mod.Compare(a.mod) })
	type summary struct {
		taskInfo
		Result *taskResult `json:"result,omitempty"`
		Error  string      `json:"error,omitempty"`
	}
	out := struct {
		Total int       `json:"total"`
		Shown int       `json:"shown"`
		Tasks []summary `json:"tasks"`
	}{Total: len(dirs), Tasks: []summary{}}
	for _, d := range dirs[:min(len(dirs), maxTasks)] {
		s := summary{taskInfo: taskInfo{Ticket: d.name}}
		if err := readJSON(c.home, filepath.Join(workDir, d.name, "task.json"), &s.taskInfo); err != nil {
			s.Error = err.Error()
		}
		var res taskResult
		if err := readJSON(c.home, filepath.Join(workDir, d.name, "result.json"), &res); err == nil {
			s.Result = &res
		} else if !errors.Is(err, fs.ErrNotExist) && s.Error == "" {
			s.Error = err.Error()
		}
		s.Ticket = d.name
		out.Tasks = append(out.Tasks, s)
	}
	out.Shown = len(out.Tasks)
	return c.dw.AddJSON(name, desc, out)
}

// maxTaskFile bounds a task.json or result.json as read: each is a few
// hundred bytes.
const maxTaskFile = 1 << 20

// readJSON reads the JSON file rel inside home, following no link.
func readJSON(home, rel string, v any) error {
	b, err := diag.ReadFileInside(home, rel, maxTaskFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %s", filepath.Base(rel), jsonProblem(err))
	}
	return nil
}

// calamari verifies every Calamari version present, as health checks do:
// marker, signature against the coordinator's key, every file's hash.
func (c *collector) calamari() error {
	const name, desc = "calamari.json", "the Calamari versions on this agent: those that verify (marker, signature, every file's SHA-256), and why each other does not"
	dir := c.path(calamariDir)
	if _, err := os.Stat(dir); err != nil {
		c.dw.Missing(name, desc, err)
		return nil
	}
	// New creates nothing here: the folder exists.
	st, err := calamari.New(calamari.Config{Dir: dir, SigningKey: c.signingKey})
	if err != nil {
		c.dw.Missing(name, desc, err)
		return nil
	}
	versions, problems := st.Scan()
	out := struct {
		Verified   []string `json:"verified"`
		Problems   []string `json:"problems,omitempty"`
		SigningKey string   `json:"signing_key"`
		Note       string   `json:"note,omitempty"`
	}{Verified: versions, Problems: problems, SigningKey: c.signingKey}
	if c.signingKey == "" {
		out.Note = "the coordinator's signing key could not be read from " + stateFile + ": no version can verify"
	}
	return c.dw.AddJSON(name, desc, out)
}

// disk records the free space in the home: a full disk stops tasks,
// Calamari pushes and upgrades.
func (c *collector) disk() error { return c.dw.AddDiskFree(c.home, "the agent's home") }

// listing describes the home's folders the agent trusts by their
// permissions, and their files' sizes, without reading any file.
func (c *collector) listing() error {
	out := map[string]any{}
	for _, sub := range []string{".", certsDir, logsDir, calamariDir} {
		files, err := diag.ListDir(c.path(sub))
		if err != nil && files == nil {
			out[sub] = map[string]string{"error": err.Error()}
			continue
		}
		out[sub] = files
	}
	return c.dw.AddJSON("home.json", "the home folder's files and folders with sizes, permissions and times (no content)", out)
}

// status adds the running agent's own view of its connection.
func (c *collector) status() error {
	const name, desc = "status.json", "the running agent's connection and work as it sees them"
	if c.cfg.Live == nil || c.cfg.Live.Status == nil {
		return nil
	}
	b, err := json.Marshal(c.cfg.Live.Status)
	if err == nil {
		b, err = diag.RedactJSON(b) // an error's text may quote an address
	}
	if err != nil {
		c.dw.Missing(name, desc, err)
		return nil
	}
	return c.dw.Add(name, desc, b)
}
