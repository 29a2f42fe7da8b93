package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/protocol"
)

// TestDiagnosticsForCoordinator: asked over its session, a running agent
// sends its archive with its own status and goroutine dump, and nothing
// of its registration's secrets.
func TestDiagnosticsForCoordinator(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.ys.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	if err := protocol.WriteFrame(st, protocol.TypeDiagnostics, protocol.Diagnostics{}); err != nil {
		t.Fatal(err)
	}
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr protocol.DiagnosticsArchive
	if err := protocol.DecodeReply(f, protocol.TypeDiagnosticsArchive, &hdr); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.tar.gz")
	if err := protocol.ReceiveBulk(st, path, hdr.Archive); err != nil {
		t.Fatalf("receive the archive (%d bytes, SHA-256 %s): %v", hdr.Archive.Size, hdr.Archive.SHA256, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ar, err := diag.Read(bytes.NewReader(b), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if ar.Manifest.Kind != diag.KindAgent || ar.Manifest.Tool.Name != "tendril-agent" || ar.Manifest.Tool.Version != "1.2.3" {
		t.Errorf("manifest: got kind %q, tool %+v; want an agent archive by tendril-agent 1.2.3", ar.Manifest.Kind, ar.Manifest.Tool)
	}
	for _, name := range []string{"versions.json", "config/agent.json", "certificates.json", diag.GoroutinesName, "status.json", "calamari.json", "disk.json", "tasks.json", "home.json"} {
		if _, ok := ar.Files[name]; !ok {
			t.Errorf("no %s in the archive; missing: %+v", name, ar.Manifest.Missing)
		}
	}
	var status struct {
		Connected bool
		Version   string `json:"version"`
	}
	json.Unmarshal(ar.Files["status.json"], &status)
	if !status.Connected || status.Version != "1.2.3" {
		t.Errorf("status.json: got %s, want connected at 1.2.3", ar.Files["status.json"])
	}
	if !strings.Contains(string(ar.Files[diag.GoroutinesName]), "handleDiagnostics") {
		t.Errorf("goroutine dump: got %.200q, want the agent's own, collecting", ar.Files[diag.GoroutinesName])
	}
	files, err := ar.Flatten(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(home, certsDir, currentSlot+".key"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		for what, secret := range map[string]string{"the enrollment token": "secret-token", "a private key": "PRIVATE KEY", "the agent's key": strings.Split(string(key), "\n")[1]} {
			if bytes.Contains(content, []byte(secret)) {
				t.Errorf("%s holds %s", name, what)
			}
		}
	}
}
