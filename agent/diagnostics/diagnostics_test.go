package diagnostics_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tendrildeploy/tendril/agent"
	"github.com/tendrildeploy/tendril/agent/diagnostics"
	"github.com/tendrildeploy/tendril/agent/upgrade"
	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

// secrets are what a home holds that no archive may: planted where an
// agent keeps them, or where a careless collector would find them.
type secrets struct {
	token, proxyPassword, apiKey string
	// keys are the PEM files of every private key in the home.
	keys [][]byte
}

// plantedHome makes a registered listening agent's home, then plants in it
// what a real one accumulates: a proxy with credentials in agent.json, an
// upgrade whose command line holds the proxy and a token, a task whose
// arguments hold an API key, logs (one of them quoting a private key, as
// a careless task might) and a Calamari version that does not verify.
func plantedHome(t *testing.T) (string, secrets) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	if _, err := agent.RegisterListening(agent.ListenConfig{Home: home, Listen: servertest.FreeAddr(t),
		ServerThumbprints: []string{strings.Repeat("ab", 32)}, Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	s := secrets{token: "tdt_enrollment-token-5ecret", proxyPassword: "pr0xy-pa55word", apiKey: "tdk_api-key-5ecret"}
	proxyURL := "http://deploy:" + s.proxyPassword + "@proxy.example:3128"

	path := filepath.Join(home, "agent.json")
	var st map[string]any
	readJSON(t, path, &st)
	st["proxy"] = proxyURL
	writeJSON(t, path, st)

	if err := upgrade.Save(home, upgrade.State{RolloutID: "r-1", From: "1.0.0", To: "1.1.0", Phase: upgrade.PhaseCommitted, Exe: "/usr/local/bin/tendril-agent",
		Args: []string{"tendril-agent", "run", "--home", home, "--proxy", proxyURL, "--token", s.token}, Reported: true}); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(home, "Work", "t-1")
	os.MkdirAll(work, 0o700)
	writeJSON(t, filepath.Join(work, "task.json"), map[string]any{"ticket": "t-1", "calamari": "1.0.0",
		"args": []string{"run-script", "--inline", "curl -H 'Authorization: Bearer " + s.apiKey + "' https://x"}, "started_at": time.Now().UTC()})
	writeJSON(t, filepath.Join(work, "result.json"), map[string]any{"state": "succeeded", "exit_code": 0, "finished_at": time.Now().UTC()})
	os.WriteFile(filepath.Join(work, "log.jsonl"), []byte(`{"seq":1,"text":"token `+s.token+`"}`+"\n"), 0o600)

	other, err := certs.NewIdentity("other")
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if err := other.Save(filepath.Join(t.TempDir(), "other.crt"), otherKey); err != nil {
		t.Fatal(err)
	}
	otherPEM, err := os.ReadFile(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(home, "Logs")
	os.WriteFile(filepath.Join(logs, "agent.log"), []byte("{\"msg\":\"agent starting\"}\n{\"msg\":\"a task printed\",\"text\":\""+string(otherPEM)+"\"}\n{\"msg\":\"after\"}\n"), 0o600)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	// lumberjack compresses rotated logs: a key quoted in one is only
	// found once it is decompressed.
	zw.Write([]byte("{\"msg\":\"an older line\"}\n{\"msg\":\"an older task printed\",\"text\":\"" + string(otherPEM) + "\"}\n"))
	zw.Close()
	os.WriteFile(filepath.Join(logs, "agent-2026-01-01T00-00-00.000.log.gz"), gz.Bytes(), 0o600)

	os.MkdirAll(filepath.Join(home, "Calamari", "1.0.0"), 0o755)
	os.WriteFile(filepath.Join(home, "Calamari", "1.0.0", "calamari"), []byte("#!/bin/sh\n"), 0o755)

	keys, _ := filepath.Glob(filepath.Join(home, "certs", "*.key"))
	for _, k := range keys {
		b, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		s.keys = append(s.keys, b)
	}
	s.keys = append(s.keys, otherPEM)
	if len(s.keys) < 2 {
		t.Fatalf("found %d private keys, want the agent's and the planted one", len(s.keys))
	}
	return home, s
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// collect runs the command line's collection on home and reads the
// archive back.
func collect(t *testing.T, home string) diag.Archive {
	t.Helper()
	var buf bytes.Buffer
	m, err := diagnostics.Collect(context.Background(), &buf, diagnostics.Config{Home: home, Tool: diag.ThisTool("tendril-agent", "9.9.9")})
	if err != nil {
		t.Fatal(err)
	}
	a, err := diag.Read(&buf, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Manifest.Entries) != len(m.Entries) {
		t.Fatalf("Collect returned %d entries, the archive's manifest lists %d", len(m.Entries), len(a.Manifest.Entries))
	}
	return a
}

// runAgent runs the agent on home until the test ends.
func runAgent(t *testing.T, home string) {
	t.Helper()
	a, err := agent.New(agent.Config{Home: home, Version: "1.1.0", Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	servertest.WaitFor(t, 10*time.Second, "the agent to lock its home", func() bool {
		b, _ := os.ReadFile(filepath.Join(home, "agent.lock"))
		return strings.TrimSpace(string(b)) != ""
	})
}

// hasEntries fails the test unless the archive holds every name in want.
func hasEntries(t *testing.T, a diag.Archive, want []string) {
	t.Helper()
	for _, name := range want {
		if _, ok := a.Files[name]; !ok {
			var got []string
			for n := range a.Files {
				got = append(got, n)
			}
			slices.Sort(got)
			t.Errorf("no %s in the archive; got %q, missing %+v, notes %q", name, got, a.Manifest.Missing, a.Manifest.Notes)
		}
	}
}

// entriesOfEveryArchive are what every agent archive holds, whether the
// agent runs or cannot start.
var entriesOfEveryArchive = []string{
	diag.ManifestName, "versions.json", "certificates.json", "logs/agent.log", "logs/agent-2026-01-01T00-00-00.000.log",
	"upgrade/state.json", "upgrade/files.json", "tasks.json", "calamari.json", "disk.json", "home.json",
}

func TestArchiveOfRunningAgent(t *testing.T) {
	home, _ := plantedHome(t)
	runAgent(t, home)
	a := collect(t, home)
	hasEntries(t, a, append(slices.Clone(entriesOfEveryArchive), "config/agent.json", diag.GoroutinesName))

	var v struct {
		Collector diag.Tool `json:"collector"`
		Agent     struct {
			Running bool `json:"running"`
			PID     int  `json:"pid"`
		} `json:"agent"`
	}
	json.Unmarshal(a.Files["versions.json"], &v)
	if !v.Agent.Running || v.Agent.PID != os.Getpid() || v.Collector.Version != "9.9.9" || v.Collector.Go == "" || v.Collector.OS == "" {
		t.Errorf("versions.json: got %s, want the running agent (pid %d) and the collector 9.9.9 with Go and OS", a.Files["versions.json"], os.Getpid())
	}
	if g := string(a.Files[diag.GoroutinesName]); !strings.Contains(g, "goroutine ") || !strings.Contains(g, "agent.(*Agent).Run") {
		t.Errorf("goroutine dump: got %.300q, want the running agent's goroutines", g)
	}
	var cal struct {
		Verified []string `json:"verified"`
		Problems []string `json:"problems"`
	}
	json.Unmarshal(a.Files["calamari.json"], &cal)
	if len(cal.Verified) != 0 || len(cal.Problems) != 1 || !strings.HasPrefix(cal.Problems[0], "1.0.0: ") {
		t.Errorf("calamari.json: got %s, want 1.0.0 not verifying", a.Files["calamari.json"])
	}
	var tasks struct {
		Tasks []map[string]any `json:"tasks"`
	}
	json.Unmarshal(a.Files["tasks.json"], &tasks)
	if len(tasks.Tasks) != 1 || tasks.Tasks[0]["ticket"] != "t-1" || tasks.Tasks[0]["args"] != nil {
		t.Errorf("tasks.json: got %s, want task t-1 without its arguments", a.Files["tasks.json"])
	}
	log := string(a.Files["logs/agent.log"])
	if !strings.Contains(log, "agent starting") || !strings.Contains(log, "after") || !strings.Contains(log, diag.KeyRemoved) {
		t.Errorf("agent.log: got %q, want it whole but for the private key it quoted", log)
	}
	var certsJSON struct {
		Slots []struct {
			Slot        string            `json:"slot"`
			Certificate *diag.Certificate `json:"certificate"`
			Loads       bool              `json:"loads"`
		} `json:"slots"`
	}
	json.Unmarshal(a.Files["certificates.json"], &certsJSON)
	thumb, err := agent.Thumbprint(home)
	if err != nil {
		t.Fatal(err)
	}
	if len(certsJSON.Slots) != 1 || certsJSON.Slots[0].Certificate == nil || certsJSON.Slots[0].Certificate.Thumbprint != thumb ||
		!certsJSON.Slots[0].Loads || certsJSON.Slots[0].Certificate.NotAfter.IsZero() {
		t.Errorf("certificates.json: got %s, want the agent's certificate %s, loading, with its expiry", a.Files["certificates.json"], thumb)
	}
}

// cannotStart are homes the agent refuses to start on.
var cannotStart = []struct {
	name  string
	spoil func(t *testing.T, home string)
	// config says whether the redacted agent.json is in the archive.
	config bool
	note   string
}{
	{"corrupt agent.json", func(t *testing.T, home string) {
		// Cut mid-way, with the proxy password before the cut: not JSON,
		// so it must be left out whole.
		path := filepath.Join(home, "agent.json")
		b, _ := os.ReadFile(path)
		i := bytes.Index(b, []byte("@proxy.example"))
		os.WriteFile(path, b[:i+5], 0o600)
	}, false, "agent.json is not valid JSON"},
	{"bad certificate", func(t *testing.T, home string) {
		os.WriteFile(filepath.Join(home, "certs", "agent.crt"), []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"), 0o644)
	}, true, "the agent's certificate and key do not load"},
}

func TestArchiveOfAgentThatCannotStart(t *testing.T) {
	for _, tt := range cannotStart {
		t.Run(tt.name, func(t *testing.T) {
			home, _ := plantedHome(t)
			tt.spoil(t, home)
			if _, err := agent.New(agent.Config{Home: home}); err == nil {
				t.Fatal("agent.New: got no error, want the agent unable to start")
			}
			a := collect(t, home)
			want := slices.Clone(entriesOfEveryArchive)
			if tt.config {
				want = append(want, "config/agent.json")
			}
			hasEntries(t, a, want)
			if _, ok := a.Files["config/agent.json"]; ok != tt.config {
				t.Errorf("config/agent.json in the archive: got %v, want %v", ok, tt.config)
			}
			if _, ok := a.Files[diag.GoroutinesName]; ok {
				t.Error("a goroutine dump of an agent that does not run")
			}
			if !slices.ContainsFunc(a.Manifest.Notes, func(n string) bool { return strings.Contains(n, tt.note) }) {
				t.Errorf("notes: got %q, want one saying %q", a.Manifest.Notes, tt.note)
			}
			if !tt.config && !slices.ContainsFunc(a.Manifest.Missing, func(m diag.Missing) bool {
				return m.Name == "config/agent.json" && strings.Contains(m.Error, "not valid JSON")
			}) {
				t.Errorf("missing: got %+v, want config/agent.json with why", a.Manifest.Missing)
			}
		})
	}
}

// TestArchivesHoldNoSecrets: neither the archive of a running agent nor
// that of one that cannot start holds, in any file, decompressed, a
// private key (a PEM block, its base64 body or its bytes), the
// enrollment token, the proxy password or an API key.
func TestArchivesHoldNoSecrets(t *testing.T) {
	type archive struct {
		name  string
		a     diag.Archive
		found secrets
	}
	var archives []archive
	home, s := plantedHome(t)
	runAgent(t, home)
	archives = append(archives, archive{"running agent", collect(t, home), s})
	for _, tt := range cannotStart {
		home, s := plantedHome(t)
		tt.spoil(t, home)
		archives = append(archives, archive{tt.name, collect(t, home), s})
	}
	for _, ar := range archives {
		t.Run(ar.name, func(t *testing.T) {
			files, err := ar.a.Flatten(1 << 30)
			if err != nil {
				t.Fatal(err)
			}
			for name, content := range files {
				for what, secret := range forbidden(t, ar.found) {
					if bytes.Contains(content, secret) {
						t.Errorf("%s holds %s", name, what)
					}
				}
			}
		})
	}
}

// forbidden lists what must appear nowhere, by what it is.
func forbidden(t *testing.T, s secrets) map[string][]byte {
	t.Helper()
	out := map[string][]byte{
		"a PEM private key block": []byte("PRIVATE KEY"),
		"the enrollment token":    []byte(s.token),
		"the proxy password":      []byte(s.proxyPassword),
		"an API key":              []byte(s.apiKey),
	}
	for i, k := range s.keys {
		block, _ := pem.Decode(k)
		if block == nil {
			t.Fatalf("key %d is not PEM", i)
		}
		out[fmt.Sprintf("private key %d's bytes", i)] = block.Bytes
		out[fmt.Sprintf("private key %d's base64", i)] = []byte(base64.StdEncoding.EncodeToString(block.Bytes)[:40])
		out[fmt.Sprintf("a line of private key %d's PEM", i)] = []byte(strings.Split(string(k), "\n")[1])
	}
	return out
}

func TestNoHome(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o700)
	tests := []struct {
		name, home, msg string
	}{
		{"does not exist", filepath.Join(dir, "nowhere"), "does not exist"},
		{"a file", file, "is not a folder"},
		{"an empty folder", empty, "holds none of agent.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := diagnostics.Collect(context.Background(), &buf, diagnostics.Config{Home: tt.home})
			if !errors.Is(err, diagnostics.ErrNoHome) || !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), tt.home) {
				t.Fatalf("got %v, want ErrNoHome naming %s and saying %q", err, tt.home, tt.msg)
			}
			if buf.Len() != 0 {
				t.Fatalf("wrote %d bytes, want no archive", buf.Len())
			}
		})
	}
}

// TestArchiveFollowsNoLink: collection runs as root on a home the
// agent's user (and what it deploys) can write. A log, and the goroutine
// dump a running agent is asked for, replaced by a symbolic link to a
// file outside the home, or to agent.json inside it, and the Logs folder
// replaced by a link, are not read into the archive.
func TestArchiveFollowsNoLink(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links need privileges on Windows")
	}
	const shadow = "root:$6$planted-shadow-hash:19000:0:99999:7:::"
	outside := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(outside, []byte(shadow), 0o600); err != nil {
		t.Fatal(err)
	}
	home, s := plantedHome(t)
	runAgent(t, home)
	logs := filepath.Join(home, "Logs")
	for _, link := range []struct{ name, target string }{
		{"shadow.log", outside},
		{"config.log", filepath.Join(home, "agent.json")},
		// A stale dump replaced by a link: the agent's next dump replaces
		// it by a rename, so the link is also planted as the dump a
		// later request would find, below.
		{"goroutines-1.txt", outside},
	} {
		if err := os.Symlink(link.target, filepath.Join(logs, link.name)); err != nil {
			t.Fatal(err)
		}
	}
	a := collect(t, home)
	if _, ok := a.Files[diag.GoroutinesName]; !ok {
		t.Errorf("no goroutine dump of the running agent: missing %+v", a.Manifest.Missing)
	}
	files, err := a.Flatten(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if bytes.Contains(content, []byte("planted-shadow-hash")) {
			t.Errorf("%s holds the file a link in Logs points to", name)
		}
		if bytes.Contains(content, []byte(s.proxyPassword)) {
			t.Errorf("%s holds the proxy password a link to agent.json would show", name)
		}
	}

	// The goroutine dump itself replaced by a link, between the agent
	// writing it and the collector reading it: requestDump sees a new
	// file, and AddFile must refuse it.
	dump := filepath.Join(home, "Logs", fmt.Sprintf("goroutines-%d.txt", os.Getpid()))
	os.Remove(dump)
	if err := os.Symlink(outside, dump); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := diag.NewWriter(&buf, diag.KindAgent, home, diag.Tool{})
	if err := w.AddFile(diag.GoroutinesName, "dump", home, filepath.Join("Logs", filepath.Base(dump)), 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if m := w.Manifest(); len(m.Entries) != 0 || len(m.Missing) != 1 || !strings.Contains(m.Missing[0].Error, "symbolic link") {
		t.Errorf("a dump replaced by a link: got entries %+v, missing %+v; want it missing as a link", m.Entries, m.Missing)
	}

	// The Logs folder replaced by a link to a folder outside the home.
	if err := os.Rename(logs, logs+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(outside), logs); err != nil {
		t.Fatal(err)
	}
	for name, content := range mustFlatten(t, collect(t, home)) {
		if bytes.Contains(content, []byte("planted-shadow-hash")) {
			t.Errorf("%s holds a file of the folder Logs links to", name)
		}
	}
}

func mustFlatten(t *testing.T, a diag.Archive) map[string][]byte {
	t.Helper()
	files, err := a.Flatten(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestConfigKeepsStateFields: every field of agent.State is copied to
// config/agent.json (stateFields is complete), and any other field is
// redacted, whatever its name.
func TestConfigKeepsStateFields(t *testing.T) {
	home, _ := plantedHome(t)
	path := filepath.Join(home, "agent.json")
	st := agent.State{AgentID: "id-1", Name: "web-1", Environment: "prod", Servers: []string{"tendril.example:10943"},
		LearnedServers: []string{"node-2.example:10943"}, ServerThumbprints: []string{strings.Repeat("ab", 32)},
		ServerHint: strings.Repeat("ab", 32), SigningKey: "ed25519-public", RegisteredAt: time.Now().UTC(),
		Proxy: "http://proxy.example:3128", Listen: ":10933"}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	unknown := map[string]any{"future_setting": "plain-value-1", "session_id": "plain-value-2", "note": map[string]any{"x": "plain-value-3"}}
	for k, v := range unknown {
		m[k] = v
	}
	writeJSON(t, path, m)
	a := collect(t, home)
	var got map[string]any
	if err := json.Unmarshal(a.Files["config/agent.json"], &got); err != nil {
		t.Fatalf("config/agent.json: %v", err)
	}
	for k, v := range m {
		want := v
		if _, ok := unknown[k]; ok {
			want = diag.Redacted
		}
		if fmt.Sprint(got[k]) != fmt.Sprint(want) {
			t.Errorf("%s: got %v, want %v", k, got[k], want)
		}
	}
}
