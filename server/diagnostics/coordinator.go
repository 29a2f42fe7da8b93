package diagnostics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// LogFile is the coordinator's log in its data folder when it has one:
// "make run" sends it there. A coordinator run by a service manager logs
// to the manager's journal instead.
const LogFile = "server.log"

const (
	// logLimit is the most of the coordinator's log an archive holds,
	// its newest part.
	logLimit = 64 << 20
	// maxDatabaseCopy is the largest SQLite database copied to be read
	// while the coordinator is not running.
	maxDatabaseCopy = 1 << 30
	// liveTimeout bounds each question to the running coordinator.
	liveTimeout = 30 * time.Second
	// maxRunFile bounds run.json as read: it is a few lines.
	maxRunFile = 1 << 20
)

// ErrNoDataDir means the folder given holds no coordinator: no archive
// is written.
var ErrNoDataDir = errors.New("no coordinator data folder")

// Live is the running coordinator, asked through its API
// (*client.Client is one).
type Live interface {
	Info(ctx context.Context) (api.ServerInfo, error)
	Nodes(ctx context.Context) ([]api.NodeView, error)
	Agents(ctx context.Context) ([]api.AgentView, error)
	Goroutines(ctx context.Context) ([]byte, error)
}

// CoordinatorConfig says what to collect of a coordinator.
type CoordinatorConfig struct {
	// DataDir is the coordinator's data folder. Required.
	DataDir string
	// Database is the PostgreSQL URL the coordinator runs with, "" for
	// the data folder's SQLite database. The archive names it with its
	// password hidden.
	Database string
	// Tool is the program collecting, named in the manifest.
	Tool diag.Tool
	// Live reaches the running coordinator; nil when none could be
	// reached, and LiveErr says why.
	Live    Live
	LiveErr error
}

// CheckDataDir returns an error wrapping ErrNoDataDir when dir does not
// exist or holds no coordinator, so that a mistyped --data is refused
// before any archive is made.
func CheckDataDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s does not exist (give the folder the coordinator runs with: --data or $TENDRIL_DATA)", ErrNoDataDir, dir)
	}
	if err != nil {
		return fmt.Errorf("coordinator data folder %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", ErrNoDataDir, dir)
	}
	if err := api.CheckInitialized(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNoDataDir, err)
	}
	return nil
}

// Coordinator writes the diagnostics archive of the coordinator whose
// data folder is cfg.DataDir to w and returns its manifest: its versions,
// run.json and the database it uses (password hidden), its certificates
// (subject, thumbprint, expiry) and the signing key's public half, the
// data folder's listing, its log if it has a file, and from the running
// coordinator its nodes, agents and goroutine dump; with none running,
// its nodes and agents from a copy of its SQLite database. Never a key,
// an API key or a token. It fails before writing anything when the folder
// holds no coordinator (ErrNoDataDir).
func Coordinator(ctx context.Context, w io.Writer, cfg CoordinatorConfig) (diag.Manifest, error) {
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return diag.Manifest{}, fmt.Errorf("collect diagnostics: %w", err)
	}
	if err := CheckDataDir(dir); err != nil {
		return diag.Manifest{}, err
	}
	c := &coordinator{ctx: ctx, dir: dir, cfg: cfg, dw: diag.NewWriter(w, diag.KindCoordinator, dir, cfg.Tool), now: time.Now()}
	if cfg.Live != nil {
		ictx, cancel := context.WithTimeout(ctx, liveTimeout)
		c.info, err = cfg.Live.Info(ictx)
		cancel()
		if err != nil {
			c.cfg.Live, c.cfg.LiveErr = nil, err
		}
	}
	if c.cfg.Live == nil {
		why := "no coordinator answered"
		if c.cfg.LiveErr != nil {
			why = c.cfg.LiveErr.Error()
		}
		c.dw.Note("the coordinator is not running here, or its API does not answer (%s): its nodes and agents are read from its database, and there is no goroutine dump", why)
	}
	return c.dw.Collect(ctx, c.versions, c.config, c.certificates, c.folder, c.log, c.fleet, c.goroutines, c.disk)
}

// coordinator is one collection in progress.
type coordinator struct {
	ctx  context.Context
	dir  string
	cfg  CoordinatorConfig
	dw   *diag.Writer
	now  time.Time
	info api.ServerInfo // from the running coordinator, if any
}

func (c *coordinator) path(name string) string { return filepath.Join(c.dir, name) }

func (c *coordinator) versions() error {
	type running struct {
		Running bool   `json:"running"`
		Version string `json:"version,omitempty"`
		Node    string `json:"node,omitempty"`
	}
	r := running{}
	if c.cfg.Live != nil {
		r = running{Running: true, Version: c.info.Version, Node: c.info.Node}
	}
	return c.dw.AddJSON("versions.json", "the collecting binary's version, Go version and platform, and the running coordinator's version and node", struct {
		Collector   diag.Tool `json:"collector"`
		Coordinator running   `json:"coordinator"`
	}{c.cfg.Tool, r})
}

// config adds run.json and the database the coordinator uses, secrets
// hidden, and what the running coordinator says of itself (GET
// /api/server: addresses, TLS minimum, protocol range, thumbprints).
func (c *coordinator) config() error {
	const runDesc = "run.json: where the running coordinator listens, its process id and version"
	b, err := diag.ReadFileInside(c.dir, api.RunFile, maxRunFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.dw.Missing("config/run.json", runDesc, errors.New("no run.json: the coordinator is not running (it removes the file when it stops)"))
	case err != nil:
		c.dw.Missing("config/run.json", runDesc, err)
	default:
		if r, err := diag.RedactJSON(b); err != nil {
			c.dw.Missing("config/run.json", runDesc, err)
		} else if err := c.dw.Add("config/run.json", runDesc, r); err != nil {
			return err
		}
	}
	db := struct {
		Backend string `json:"backend"`
		// URL is a PostgreSQL database as user@host:port/name: parsed,
		// not the URL given with its password cut out, which a password
		// quoted or holding "@" would defeat.
		URL   string `json:"url,omitempty"`
		File  string `json:"file,omitempty"`
		Size  int64  `json:"size,omitempty"`
		Error string `json:"error,omitempty"`
	}{Backend: "sqlite", File: datadir.DBFile}
	if c.cfg.Database != "" {
		db.Backend, db.File = "postgres", ""
		if u, err := describeDatabase(c.cfg.Database); err != nil {
			db.Error = diag.RedactString(err.Error())
		} else {
			db.URL = u
		}
	} else if st, err := os.Stat(c.path(datadir.DBFile)); err != nil {
		db.Error = err.Error()
	} else {
		db.Size = st.Size()
	}
	if err := c.dw.AddJSON("config/database.json", "the database the coordinator keeps its state in (a PostgreSQL database as user@host:port/name, never its password)", db); err != nil {
		return err
	}
	if c.cfg.Live == nil {
		return nil
	}
	return c.dw.AddJSON("config/server.json", "the running coordinator's own description (GET /api/server)", c.info)
}

// describeDatabase names the PostgreSQL database at url as
// postgres://user@host:port/name (sqlstore.DescribeDatabase). A URL whose
// user information holds a second, unencoded "@" is not named: pgx, like
// libpq, ends the user information at the first, so the rest of the
// password would show as the host.
func describeDatabase(url string) (string, error) {
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		rest, ok := strings.CutPrefix(url, scheme)
		if authority, _, _ := strings.Cut(rest, "/"); ok && strings.Count(authority, "@") > 1 {
			return "", errors.New("invalid database URL: its user information holds an unencoded \"@\" (percent-encode it as %40); not named, as part of the password would show as the host")
		}
	}
	return sqlstore.DescribeDatabase(url)
}

// certificates describes the coordinator's certificates and the signing
// key's public half; the keys are listed, never copied.
func (c *coordinator) certificates() error {
	const name, desc = "certificates.json", "the coordinator's certificates (subject, thumbprint, expiry), whether each loads with its key, and the public half of its signing key; never a key"
	type cert struct {
		Role        string           `json:"role"`
		Certificate diag.Certificate `json:"certificate"`
		Loads       bool             `json:"loads"`
		Error       string           `json:"error,omitempty"`
	}
	var out struct {
		Certificates []cert `json:"certificates"`
		SigningKey   string `json:"signing_key_public,omitempty"`
		SigningError string `json:"signing_key_error,omitempty"`
	}
	for _, s := range []struct{ role, crt, key string }{
		{"current", datadir.CertFile, datadir.KeyFile},
		{"previous (served during a rotation)", datadir.PrevCertFile, datadir.PrevKeyFile},
		{"next (announced during a rotation)", datadir.NextCertFile, datadir.NextKeyFile},
	} {
		crt := c.path(s.crt)
		if _, err := os.Stat(crt); errors.Is(err, fs.ErrNotExist) && s.role != "current" {
			continue
		}
		ct := cert{Role: s.role, Certificate: diag.DescribeCertificate(crt, c.now)}
		if _, err := certs.LoadIdentity(crt, c.path(s.key)); err != nil {
			ct.Error = err.Error()
		} else {
			ct.Loads = true
		}
		if ct.Certificate.Expired {
			c.dw.Note("certificate %s expired at %s", s.crt, ct.Certificate.NotAfter.Format(time.RFC3339))
		}
		out.Certificates = append(out.Certificates, ct)
	}
	if k, err := certs.LoadSigningKey(c.path(datadir.SigningFile)); err != nil {
		out.SigningError = err.Error()
	} else {
		out.SigningKey = k.Public()
	}
	return c.dw.AddJSON(name, desc, out)
}

// folder lists the data folder and its store folders without reading a
// file: sizes, permissions and times (a key readable by others, a full
// backups folder).
func (c *coordinator) folder() error {
	out := map[string]any{}
	for _, sub := range []string{".", datadir.Calamari, datadir.AgentPackages, datadir.Backups} {
		files, err := diag.ListDir(c.path(sub))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil && files == nil:
			out[sub] = map[string]string{"error": err.Error()}
		default:
			out[sub] = files
		}
	}
	return c.dw.AddJSON("data.json", "the data folder's files with sizes, permissions and times (no content; uploaded task files are left out)", out)
}

// log adds the coordinator's log file, if it has one, its newest part;
// a link in its place is not followed (diag.OpenInside).
func (c *coordinator) log() error {
	if _, err := os.Lstat(c.path(LogFile)); errors.Is(err, fs.ErrNotExist) {
		c.dw.Note("no %s in the data folder: a coordinator run by a service manager logs to its journal (journalctl -u NAME)", LogFile)
		return nil
	}
	return c.dw.AddFile("logs/"+LogFile, "the coordinator's log", c.dir, LogFile, logLimit, true)
}

// agentSummary is an agent as the archive lists it: what tells a healthy
// fleet from a troubled one, nothing secret.
type agentSummary struct {
	Name        string `json:"name"`
	Environment string `json:"environment"`
	Mode        string `json:"mode"`
	Version     string `json:"version"`
	Platform    string `json:"platform"`
	Protocol    int    `json:"protocol"`
	TLSVersion  string `json:"tls_version"`
	Connected   bool   `json:"connected"`
	Node        string `json:"node,omitempty"`
	Health      string `json:"health"`
	Detail      string `json:"health_detail,omitempty"`
	LastSeen    string `json:"last_seen"`
	Address     string `json:"address,omitempty"`
	DialError   string `json:"dial_error,omitempty"`
}

// fleet adds the nodes and an agent summary: from the running
// coordinator, or else from a copy of its SQLite database.
func (c *coordinator) fleet() error {
	const nodesName, nodesDesc = "nodes.json", "the coordinator nodes sharing the database, with their state and heartbeats"
	const agentsName, agentsDesc = "agents.json", "every agent: mode, version, platform, connection, health, last seen"
	if c.cfg.Live != nil {
		ctx, cancel := context.WithTimeout(c.ctx, liveTimeout)
		defer cancel()
		if nodes, err := c.cfg.Live.Nodes(ctx); err != nil {
			c.dw.Missing(nodesName, nodesDesc, err)
		} else if err := c.dw.AddJSON(nodesName, nodesDesc+" (GET /api/nodes)", nodes); err != nil {
			return err
		}
		agents, err := c.cfg.Live.Agents(ctx)
		if err != nil {
			c.dw.Missing(agentsName, agentsDesc, err)
			return nil
		}
		out := make([]agentSummary, 0, len(agents))
		for _, a := range agents {
			out = append(out, agentSummary{Name: a.Name, Environment: a.Environment, Mode: a.Mode, Version: a.Version, Platform: a.OS + "/" + a.Arch,
				Protocol: a.Protocol, TLSVersion: a.TLSVersion, Connected: a.Connected, Node: a.Node, Health: a.Health, Detail: a.HealthDetail,
				LastSeen: a.LastSeen, Address: a.Address, DialError: a.DialError})
		}
		return c.dw.AddJSON(agentsName, agentsDesc+" (GET /api/agents)", out)
	}
	if c.cfg.Database != "" {
		err := errors.New("the coordinator is not running and its database is PostgreSQL, which diagnostics does not open (opening migrates a shared database): ask a running node (tendril-server nodes list, agents list)")
		c.dw.Missing(nodesName, nodesDesc, err)
		c.dw.Missing(agentsName, agentsDesc, err)
		return nil
	}
	st, cleanup, err := c.openCopy()
	if err != nil {
		c.dw.Missing(nodesName, nodesDesc, err)
		c.dw.Missing(agentsName, agentsDesc, err)
		return nil
	}
	defer cleanup()
	const fromCopy = " (read from a copy of the database: the coordinator is not running)"
	if nodes, err := st.Nodes(c.ctx); err != nil {
		c.dw.Missing(nodesName, nodesDesc, err)
	} else if err := c.dw.AddJSON(nodesName, nodesDesc+fromCopy, nodes); err != nil {
		return err
	}
	agents, err := st.ListAgents(c.ctx)
	if err != nil {
		c.dw.Missing(agentsName, agentsDesc, err)
		return nil
	}
	out := make([]agentSummary, 0, len(agents))
	for _, a := range agents {
		mode := api.ModePolling
		if a.Listening() {
			mode = api.ModeListening
		}
		s := agentSummary{Name: a.Name, Environment: a.Environment, Mode: mode, Version: a.Version, Platform: a.OS + "/" + a.Arch,
			Protocol: a.Protocol, TLSVersion: a.TLSVersion, Node: a.Node, Health: a.Health, Detail: a.HealthDetail,
			Address: a.Address, DialError: a.DialError}
		if !a.LastSeen.IsZero() {
			s.LastSeen = a.LastSeen.UTC().Format(time.RFC3339)
		}
		out = append(out, s)
	}
	return c.dw.AddJSON(agentsName, agentsDesc+fromCopy, out)
}

// openCopy copies the SQLite database (and its write-ahead log) into a
// temporary folder and opens the copy: the coordinator's own file is
// never opened, so an older schema is migrated in the copy only and
// nothing of the data folder changes.
func (c *coordinator) openCopy() (store.Store, func(), error) {
	src := c.path(datadir.DBFile)
	st, err := os.Stat(src)
	if err != nil {
		return nil, nil, err
	}
	if st.Size() > maxDatabaseCopy {
		return nil, nil, fmt.Errorf("%s is %d bytes, more than the %d diagnostics copies to read while the coordinator is not running", datadir.DBFile, st.Size(), int64(maxDatabaseCopy))
	}
	tmp, err := os.MkdirTemp("", "tendril-diagnostics-db-*")
	if err != nil {
		return nil, nil, fmt.Errorf("copy the database: %w", err)
	}
	cleanup := func() { os.RemoveAll(tmp) }
	for _, suffix := range []string{"", "-wal"} {
		if err := copyFile(c.dir, datadir.DBFile+suffix, filepath.Join(tmp, datadir.DBFile+suffix)); err != nil && (suffix == "" || !errors.Is(err, fs.ErrNotExist)) {
			cleanup()
			return nil, nil, fmt.Errorf("copy the database: %w", err)
		}
	}
	s, err := sqlstore.OpenSQLite(c.ctx, filepath.Join(tmp, datadir.DBFile))
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return s, func() { s.Close(); cleanup() }, nil
}

// copyFile copies the file rel inside dir to dst, following no link.
func copyFile(dir, rel, dst string) error {
	in, _, err := diag.OpenInside(dir, rel)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// goroutines adds the running coordinator's goroutine dump.
func (c *coordinator) goroutines() error {
	const desc = "the running coordinator's goroutines with their stacks (GET /api/server/goroutines)"
	if c.cfg.Live == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, liveTimeout)
	defer cancel()
	b, err := c.cfg.Live.Goroutines(ctx)
	if err != nil {
		c.dw.Missing(diag.GoroutinesName, desc, err)
		return nil
	}
	return c.dw.Add(diag.GoroutinesName, desc, b)
}

// disk records the free space in the data folder: a full disk stops the
// database and uploads.
func (c *coordinator) disk() error { return c.dw.AddDiskFree(c.dir, "the data folder") }
