package diagnostics_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/diagnostics"
	"github.com/tendrildeploy/tendril/server/store"
	"github.com/tendrildeploy/tendril/server/store/sqlstore"
)

// dataFolder makes a coordinator's data folder with one agent in its
// database and a log, and returns what must never leave it.
func dataFolder(t *testing.T) (dir string, forbidden map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	dir = filepath.Join(t.TempDir(), "data")
	res, err := datadir.Init(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, datadir.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddListening(ctx, store.ListeningParams{NewID: uuid.NewString(), Name: "dmz-1", Environment: "DMZ",
		Thumbprint: strings.Repeat("cd", 32), Address: "10.0.0.1:10933", Now: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	os.WriteFile(filepath.Join(dir, diagnostics.LogFile), []byte("{\"msg\":\"coordinator started\"}\n"), 0o600)

	forbidden = map[string][]byte{"the admin API key": []byte(res.AdminKey), "a PEM private key block": []byte("PRIVATE KEY")}
	master, err := os.ReadFile(filepath.Join(dir, datadir.MasterFile))
	if err != nil {
		t.Fatal(err)
	}
	forbidden["the master key"] = bytes.TrimSpace(master)
	for _, name := range []string{datadir.KeyFile, datadir.SigningFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		forbidden[name+"'s bytes"] = block.Bytes
		for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if !strings.HasPrefix(l, "-----") {
				forbidden[fmt.Sprintf("line %d of %s", i, name)] = []byte(l)
			}
		}
	}
	return dir, forbidden
}

// snapshot is every file of dir with its content's hash: what a
// collection must leave as it was.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = sha256.Sum256(b)
		return nil
	})
	return out
}

func collectCoordinator(t *testing.T, cfg diagnostics.CoordinatorConfig) diag.Archive {
	t.Helper()
	var buf bytes.Buffer
	cfg.Tool = diag.ThisTool("tendril-server", "9.9.9")
	if _, err := diagnostics.Coordinator(context.Background(), &buf, cfg); err != nil {
		t.Fatal(err)
	}
	a, err := diag.Read(&buf, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func checkNoSecrets(t *testing.T, a diag.Archive, forbidden map[string][]byte) {
	t.Helper()
	files, err := a.Flatten(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		for what, secret := range forbidden {
			if bytes.Contains(content, secret) {
				t.Errorf("%s holds %s", name, what)
			}
		}
	}
}

func hasAll(t *testing.T, a diag.Archive, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := a.Files[n]; !ok {
			t.Errorf("no %s; missing %+v, notes %q", n, a.Manifest.Missing, a.Manifest.Notes)
		}
	}
}

func TestCoordinatorArchiveWhileStopped(t *testing.T) {
	dir, forbidden := dataFolder(t)
	before := snapshot(t, dir)
	a := collectCoordinator(t, diagnostics.CoordinatorConfig{DataDir: dir, LiveErr: errors.New("no coordinator is running")})
	if after := snapshot(t, dir); !maps(before, after) {
		t.Error("the data folder changed: diagnostics must only read it")
	}
	hasAll(t, a, "versions.json", "config/database.json", "certificates.json", "data.json", "logs/"+diagnostics.LogFile, "nodes.json", "agents.json", "disk.json")
	if !slices.ContainsFunc(a.Manifest.Notes, func(n string) bool { return strings.Contains(n, "no coordinator is running") }) {
		t.Errorf("notes: got %q, want why no coordinator answered", a.Manifest.Notes)
	}
	if !slices.ContainsFunc(a.Manifest.Missing, func(m diag.Missing) bool { return m.Name == "config/run.json" }) {
		t.Errorf("missing: got %+v, want run.json, which only a running coordinator has", a.Manifest.Missing)
	}
	if !strings.Contains(string(a.Files["agents.json"]), `"dmz-1"`) {
		t.Errorf("agents.json: got %s, want dmz-1 from the database", a.Files["agents.json"])
	}
	var c struct {
		Certificates []struct {
			Certificate diag.Certificate `json:"certificate"`
			Loads       bool             `json:"loads"`
		} `json:"certificates"`
		SigningKey string `json:"signing_key_public"`
	}
	json.Unmarshal(a.Files["certificates.json"], &c)
	thumb, _ := datadir.ReadThumbprint(dir)
	if len(c.Certificates) != 1 || c.Certificates[0].Certificate.Thumbprint != thumb || !c.Certificates[0].Loads || len(c.SigningKey) != 64 {
		t.Errorf("certificates.json: got %s, want the certificate %s loading, and the signing key's public half", a.Files["certificates.json"], thumb)
	}
	checkNoSecrets(t, a, forbidden)
}

func maps(a, b map[string][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestCoordinatorArchiveWithPostgreSQL: the database is named as
// user@host:port/name, parsed, whatever form the URL gives its password
// in: a URL (with "@" in the password), key=value settings with a quoted
// password holding spaces. A URL that does not parse is named by why,
// never quoted.
func TestCoordinatorArchiveWithPostgreSQL(t *testing.T) {
	tests := []struct {
		name, url, want string
		secrets         []string
	}{
		{"URL", "postgres://tendril:s3cret-db@db.example:5432/tendril?sslmode=verify-full&sslpassword=kpass",
			`"url": "postgres://tendril@db.example:5432/tendril"`, []string{"s3cret-db", "kpass"}},
		{"URL with @ in the password", "postgres://tendril:p@ss-w0rd@db.example/tendril",
			`unencoded \"@\"`, []string{"p@ss-w0rd", "ss-w0rd"}},
		{"URL with @ encoded in the password", "postgresql://tendril:p%40ss-w0rd@db.example/tendril",
			`"url": "postgres://tendril@db.example:5432/tendril"`, []string{"p%40ss-w0rd", "ss-w0rd"}},
		{"key=value, quoted", "host=db.example port=5433 user=tendril password='my s3cret pw' dbname=t",
			`"url": "postgres://tendril@db.example:5433/t"`, []string{"my s3cret pw", "s3cret"}},
		{"unparsable", "postgres://tendril:s3cret-db@db.example:notaport/t",
			`"error": "invalid database URL`, []string{"s3cret-db"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, forbidden := dataFolder(t)
			for i, s := range tt.secrets {
				forbidden[fmt.Sprintf("the database secret %d", i)] = []byte(s)
			}
			a := collectCoordinator(t, diagnostics.CoordinatorConfig{DataDir: dir, Database: tt.url})
			if got := string(a.Files["config/database.json"]); !strings.Contains(got, tt.want) {
				t.Errorf("config/database.json: got %s, want it holding %s", got, tt.want)
			}
			for _, name := range []string{"nodes.json", "agents.json"} {
				if !slices.ContainsFunc(a.Manifest.Missing, func(m diag.Missing) bool { return m.Name == name && strings.Contains(m.Error, "PostgreSQL") }) {
					t.Errorf("missing: got %+v, want %s not read from a shared database", a.Manifest.Missing, name)
				}
			}
			checkNoSecrets(t, a, forbidden)
		})
	}
}

// TestCoordinatorArchiveFollowsNoLink: server.log replaced by a link to a
// file outside the data folder is not read into the archive.
func TestCoordinatorArchiveFollowsNoLink(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links need privileges on Windows")
	}
	dir, _ := dataFolder(t)
	outside := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(outside, []byte("root:planted-shadow-hash"), 0o600)
	os.Remove(filepath.Join(dir, diagnostics.LogFile))
	if err := os.Symlink(outside, filepath.Join(dir, diagnostics.LogFile)); err != nil {
		t.Fatal(err)
	}
	a := collectCoordinator(t, diagnostics.CoordinatorConfig{DataDir: dir, LiveErr: errors.New("not running")})
	checkNoSecrets(t, a, map[string][]byte{"the file server.log links to": []byte("planted-shadow-hash")})
	if !slices.ContainsFunc(a.Manifest.Missing, func(m diag.Missing) bool {
		return m.Name == "logs/"+diagnostics.LogFile && strings.Contains(m.Error, "symbolic link")
	}) {
		t.Errorf("missing: got %+v, want the log left out as a link", a.Manifest.Missing)
	}
}

// fakeLive is a running coordinator's API.
type fakeLive struct{}

func (fakeLive) Info(context.Context) (api.ServerInfo, error) {
	return api.ServerInfo{Version: "1.4.0", Node: "web-a:10943"}, nil
}

func (fakeLive) Nodes(context.Context) ([]api.NodeView, error) {
	return []api.NodeView{{Name: "web-a:10943", State: api.NodeRunning, Alive: true}}, nil
}

func (fakeLive) Agents(context.Context) ([]api.AgentView, error) {
	return []api.AgentView{{Name: "web-1", Connected: true, Health: api.HealthHealthy, Mode: api.ModePolling}}, nil
}

func (fakeLive) Goroutines(context.Context) ([]byte, error) {
	return []byte("goroutine 1 [running]:\n"), nil
}

func TestCoordinatorArchiveWhileRunning(t *testing.T) {
	dir, forbidden := dataFolder(t)
	a := collectCoordinator(t, diagnostics.CoordinatorConfig{DataDir: dir, Live: fakeLive{}})
	hasAll(t, a, "config/server.json", "nodes.json", "agents.json", diag.GoroutinesName)
	if !strings.Contains(string(a.Files["agents.json"]), `"web-1"`) || !strings.Contains(string(a.Files["versions.json"]), `"1.4.0"`) {
		t.Errorf("got agents %s and versions %s, want what the running coordinator said", a.Files["agents.json"], a.Files["versions.json"])
	}
	checkNoSecrets(t, a, forbidden)
}

func TestNoDataFolder(t *testing.T) {
	empty := t.TempDir()
	for _, tt := range []struct{ name, dir, msg string }{
		{"does not exist", filepath.Join(empty, "nowhere"), "does not exist"},
		{"not initialized", empty, "not initialized"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := diagnostics.Coordinator(context.Background(), &buf, diagnostics.CoordinatorConfig{DataDir: tt.dir})
			if !errors.Is(err, diagnostics.ErrNoDataDir) || !strings.Contains(err.Error(), tt.msg) || buf.Len() != 0 {
				t.Fatalf("got %v and %d bytes, want ErrNoDataDir saying %q and no archive", err, buf.Len(), tt.msg)
			}
		})
	}
}
