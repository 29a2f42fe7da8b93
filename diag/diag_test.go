package diag

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/certs"
)

const keyPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oJ2wOjE3sSYCoAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n"

func TestWriterAndRead(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.log")
	big := filepath.Join(dir, "big.log")
	if err := os.WriteFile(small, []byte("one\ntwo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf, KindAgent, "/home", ThisTool("test", "1.2.3"))
	w.Note("a note %d", 1)
	w.Missing("gone.json", "something absent", errors.New("no such thing"))
	steps := []error{
		w.Add("plain.txt", "bytes", []byte("hello")),
		w.AddJSON("v.json", "a value", map[string]int{"n": 1}),
		w.AddFile("logs/small.log", "a log", dir, "small.log", 100, true),
		w.AddFile("logs/big.log", "a log's tail", dir, "big.log", 4, true),
		w.AddFile("logs/big-whole.log", "a file too big to keep whole", dir, "big.log", 4, false),
		w.AddFile("logs/none.log", "a file that is not there", dir, "none", 100, false),
		w.Add("key.txt", "a line quoting a key", []byte("before\n"+keyPEM+"after\n")),
		w.Add("../escape", "a name that leaves the folder", []byte("x")),
		w.Add("plain.txt", "a name used twice", []byte("x")),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	a, err := Read(bytes.NewReader(buf.Bytes()), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m := a.Manifest
	if m.Kind != KindAgent || m.Subject != "/home" || m.Tool.Version != "1.2.3" || m.Tool.Go == "" || m.Created.IsZero() {
		t.Fatalf("manifest header: got %+v, want kind agent, subject /home, tool 1.2.3 with Go", m)
	}
	want := map[string]string{
		"plain.txt":      "hello",
		"v.json":         "{\n  \"n\": 1\n}\n",
		"logs/small.log": "one\ntwo\n",
		"logs/big.log":   "cdef",
		"key.txt":        "before\n" + KeyRemoved + "\nafter\n",
	}
	if len(m.Entries) != len(want) {
		t.Fatalf("entries: got %d %+v, want %d", len(m.Entries), m.Entries, len(want))
	}
	for _, e := range m.Entries {
		if got := string(a.Files[e.Name]); got != want[e.Name] {
			t.Errorf("%s: got %q, want %q", e.Name, got, want[e.Name])
		}
		if e.Collected.IsZero() || e.Description == "" {
			t.Errorf("%s: got collected %v, description %q; want both", e.Name, e.Collected, e.Description)
		}
	}
	byName := map[string]Entry{}
	for _, e := range m.Entries {
		byName[e.Name] = e
	}
	if e := byName["logs/big.log"]; !e.Truncated || e.SourceSize != 16 || e.Source != big || e.Modified.IsZero() {
		t.Errorf("truncated log: got %+v, want truncated from 16 bytes of %s", e, big)
	}
	if e := byName["key.txt"]; e.KeysRemoved != 1 {
		t.Errorf("key.txt: got %d keys removed, want 1", e.KeysRemoved)
	}
	missing := map[string]string{}
	for _, ms := range m.Missing {
		missing[ms.Name] = ms.Error
	}
	for name, msg := range map[string]string{
		"gone.json":          "no such thing",
		"logs/big-whole.log": "more than the 4 an entry may hold",
		"logs/none.log":      "no such file",
		"../escape":          "not a plain relative path",
		"plain.txt":          "named twice",
	} {
		if !strings.Contains(missing[name], msg) {
			t.Errorf("missing %s: got %q, want it saying %q", name, missing[name], msg)
		}
	}
	if len(m.Notes) != 1 || m.Notes[0] != "a note 1" {
		t.Errorf("notes: got %q, want [a note 1]", m.Notes)
	}
}

// tarGz packs files, in order, as a gzip-compressed tar.
func tarGz(t testing.TB, files ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f[0], Mode: 0o600, Size: int64(len(f[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f[1]))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestReadRefusesDamagedArchives(t *testing.T) {
	var good bytes.Buffer
	w := NewWriter(&good, KindAgent, "x", Tool{})
	w.Add("a.txt", "a", []byte("aaa"))
	w.Close()
	a, err := Read(bytes.NewReader(good.Bytes()), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	manifest := string(a.Files[ManifestName])
	tests := []struct {
		name string
		data []byte
		msg  string
	}{
		{"not gzip", []byte("hello"), "gzip"},
		{"no manifest", tarGz(t, [2]string{"a.txt", "aaa"}), "no manifest.json"},
		{"manifest not JSON", tarGz(t, [2]string{ManifestName, "{"}), "manifest.json"},
		{"entry changed", tarGz(t, [2]string{"a.txt", "aab"}, [2]string{ManifestName, manifest}), "differs from its size or SHA-256"},
		{"entry missing", tarGz(t, [2]string{ManifestName, manifest}), `lists "a.txt"`},
		{"entry not listed", tarGz(t, [2]string{"a.txt", "aaa"}, [2]string{"b.txt", "b"}, [2]string{ManifestName, manifest}), `"b.txt" is not in the manifest`},
		{"entry twice", tarGz(t, [2]string{"a.txt", "aaa"}, [2]string{"a.txt", "aaa"}, [2]string{ManifestName, manifest}), "appears twice"},
		{"too large", good.Bytes(), "larger than 10 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := int64(1 << 20)
			if tt.name == "too large" {
				limit = 10
			}
			_, err := Read(bytes.NewReader(tt.data), limit)
			if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want ErrBadArchive saying %q", err, tt.msg)
			}
		})
	}
}

func TestFlattenReadsNestedArchivesAndRotatedLogs(t *testing.T) {
	var inner bytes.Buffer
	iw := NewWriter(&inner, KindAgent, "home", Tool{})
	iw.Add("logs/agent.log", "log", []byte("inner log"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("rotated text"))
	zw.Close()
	iw.Add("logs/agent-1.log.gz", "rotated", gz.Bytes())
	iw.Close()
	var outer bytes.Buffer
	ow := NewWriter(&outer, KindAgentFromCoordinator, "web-1", Tool{})
	ow.Add("agent/diagnostics.tar.gz", "nested", inner.Bytes())
	ow.Close()
	a, err := Read(&outer, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	files, err := a.Flatten(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"agent/diagnostics.tar.gz/logs/agent.log":      "inner log",
		"agent/diagnostics.tar.gz/logs/agent-1.log.gz": "rotated text",
	} {
		if got := string(files[name]); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
}

func TestRemovePrivateKeys(t *testing.T) {
	tests := []struct {
		name, in, want string
		n              int
	}{
		{"none", "plain text", "plain text", 0},
		{"PKCS#8", "a\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\nb", "a\n" + KeyRemoved + "\nb", 1},
		{"two kinds", "-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----|-----BEGIN OPENSSH PRIVATE KEY-----\ny\n-----END OPENSSH PRIVATE KEY-----", KeyRemoved + "|" + KeyRemoved, 2},
		{"cut short", "log line -----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA", "log line " + KeyRemoved, 1},
		{"certificate kept", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n := RemovePrivateKeys([]byte(tt.in))
			if string(got) != tt.want || n != tt.n {
				t.Fatalf("got %q, %d; want %q, %d", got, n, tt.want, tt.n)
			}
		})
	}
}

func TestRedactJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"proxy credentials", `{"proxy": "http://bob:hunter2@proxy:3128"}`, `{"proxy": "http://xxxxx@proxy:3128"}`},
		{"secret names", `{"password": "p", "api_key": "k", "Token": "t", "nested": {"client_secret": "s"}, "auth": {"user": "u"}}`,
			`{"password": "xxxxx", "api_key": "xxxxx", "Token": "xxxxx", "nested": {"client_secret": "xxxxx"}, "auth": "xxxxx"}`},
		{"empty secret kept empty", `{"password": "", "token": null, "auth": false}`, `{"password": "", "token": null, "auth": false}`},
		{"database URL", `{"db": "postgres://tendril:s3cret@db:5432/tendril?sslmode=verify-full&sslpassword=kp"}`,
			`{"db": "postgres://xxxxx@db:5432/tendril?sslmode=verify-full&sslpassword=xxxxx"}`},
		{"connection string", `{"db": "host=db user=tendril password=s3cret dbname=t"}`, `{"db": "host=db user=tendril password=xxxxx dbname=t"}`},
		{"key in a string", `{"note": "` + strings.ReplaceAll(keyPEM, "\n", `\n`) + `"}`, `{"note": "` + KeyRemoved + `\n"}`},
		{"public things kept", `{"signing_key": "ab12", "server_thumbprints": ["cd"], "servers": ["wss://tendril.example/agent"], "n": 12345678901234567890}`,
			`{"signing_key": "ab12", "server_thumbprints": ["cd"], "servers": ["wss://tendril.example/agent"], "n": 12345678901234567890}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RedactJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			json.Unmarshal(got, &g)
			json.Unmarshal([]byte(tt.want), &w)
			gb, _ := json.Marshal(g)
			wb, _ := json.Marshal(w)
			if !bytes.Equal(gb, wb) {
				t.Fatalf("got %s, want %s", gb, wb)
			}
		})
	}
	if _, err := RedactJSON([]byte(`{"password": "p"`)); err == nil {
		t.Fatal("redacting text that is not JSON: got no error, want one (it cannot be redacted field by field)")
	}
}

func TestRedactArgs(t *testing.T) {
	proxy := map[string]func(string) string{"proxy": func(string) string { return "(proxy)" }}
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"flag and value", []string{"run", "--token", "T", "--home", "/h"}, []string{"run", "--token", Redacted, "--home", "/h"}},
		{"flag=value", []string{"--api-key=K", "--password=P"}, []string{"--api-key=" + Redacted, "--password=" + Redacted}},
		{"own redaction", []string{"--proxy", "u:p@h:1", "--proxy=u:p@h:1"}, []string{"--proxy", "(proxy)", "--proxy=(proxy)"}},
		{"URL anywhere", []string{"http://u:p@h:1"}, []string{"http://xxxxx@h:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RedactArgs(tt.in, proxy)
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDescribeCertificate(t *testing.T) {
	dir := t.TempDir()
	id, err := certs.NewIdentity("web-1")
	if err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(dir, "agent.crt"), filepath.Join(dir, "agent.key")
	if err := id.Save(crt, key); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.crt")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	c := DescribeCertificate(crt, time.Now())
	if c.Subject != "CN=web-1" || c.Thumbprint != id.Thumbprint || c.NotAfter.IsZero() || c.Expired || c.Error != "" {
		t.Fatalf("got %+v, want CN=web-1 with thumbprint %s, not expired", c, id.Thumbprint)
	}
	if c := DescribeCertificate(crt, c.NotAfter.Add(time.Hour)); !c.Expired {
		t.Fatalf("an hour after its expiry: got %+v, want expired", c)
	}
	if c := DescribeCertificate(key, time.Now()); c.Error != "no PEM CERTIFICATE block" || c.Subject != "" {
		t.Fatalf("a key file: got %+v, want only an error", c)
	}
	if c := DescribeCertificate(bad, time.Now()); c.Error == "" {
		t.Fatalf("garbage: got %+v, want an error", c)
	}
}

func TestWriteFileLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tar.gz")
	err := WriteFile(out, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return errors.New("disk full")
	})
	if err == nil || err.Error() != "disk full" {
		t.Fatalf("got %v, want the build's error", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("after a failed build the folder holds %v, want nothing", entries)
	}
	if err := WriteFile(out, func(w io.Writer) error { _, err := w.Write([]byte("whole")); return err }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "whole" {
		t.Fatalf("got %q, want whole", b)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode: got %v, want 0600", st.Mode().Perm())
	}
}

// FuzzRead: no input makes Read panic or accept an archive whose
// manifest does not list exactly its entries.
func FuzzRead(f *testing.F) {
	var good bytes.Buffer
	w := NewWriter(&good, KindAgent, "x", Tool{})
	w.Add("a.txt", "a", []byte("aaa"))
	w.AddJSON("b.json", "b", []int{1})
	w.Close()
	f.Add(good.Bytes())
	f.Add(tarGz(f, [2]string{ManifestName, `{"format": 1, "entries": []}`}))
	f.Add(tarGz(f, [2]string{"a", "b"}))
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Read(bytes.NewReader(data), 1<<20)
		if err != nil {
			if !errors.Is(err, ErrBadArchive) {
				t.Fatalf("error %v does not wrap ErrBadArchive", err)
			}
			return
		}
		if len(a.Files) != len(a.Manifest.Entries)+1 {
			t.Fatalf("accepted %d files for %d manifest entries", len(a.Files), len(a.Manifest.Entries))
		}
		a.Flatten(1 << 20)
	})
}

// TestAddGzipFile: a rotated log is stored decompressed, so the private
// key it quoted is cut out; its tail is kept when it is long; and what
// is not gzip, or inflates past the bound, is recorded as missing.
func TestAddGzipFile(t *testing.T) {
	dir := t.TempDir()
	gz := func(name, text string) {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(text))
		zw.Close()
		os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o600)
	}
	gz("key.log.gz", "before\n"+keyPEM+"after\n")
	gz("long.log.gz", strings.Repeat("x", 40)+"tail")
	gz("bomb.log.gz", strings.Repeat("y", 10*maxInflate))
	os.WriteFile(filepath.Join(dir, "plain.log.gz"), []byte("not gzip"), 0o600)
	var buf bytes.Buffer
	w := NewWriter(&buf, KindAgent, dir, Tool{})
	for _, f := range []string{"key.log.gz", "long.log.gz", "bomb.log.gz", "plain.log.gz"} {
		limit := int64(1 << 20)
		if f != "key.log.gz" {
			limit = 4
		}
		if err := w.AddGzipFile("logs/"+strings.TrimSuffix(f, ".gz"), "rotated", dir, f, limit); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := Read(&buf, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(a.Files["logs/key.log"]), "before\n"+KeyRemoved+"\nafter\n"; got != want {
		t.Errorf("key.log: got %q, want %q", got, want)
	}
	if got := string(a.Files["logs/long.log"]); got != "tail" {
		t.Errorf("long.log: got %q, want its last 4 bytes", got)
	}
	for _, e := range a.Manifest.Entries {
		if e.Name == "logs/long.log" && (!e.Truncated || e.SourceSize != 44) {
			t.Errorf("long.log: got %+v, want truncated from 44 bytes", e)
		}
		if e.Name == "logs/key.log" && e.KeysRemoved != 1 {
			t.Errorf("key.log: got %d keys removed, want 1", e.KeysRemoved)
		}
	}
	missing := map[string]string{}
	for _, m := range a.Manifest.Missing {
		missing[m.Name] = m.Error
	}
	for name, want := range map[string]string{"logs/bomb.log": "more than", "logs/plain.log": "decompress"} {
		if !strings.Contains(missing[name], want) {
			t.Errorf("missing %s: got %q, want it saying %q", name, missing[name], want)
		}
	}
}

func TestReadTail(t *testing.T) {
	for _, n := range []int{0, 3, 4, 5, 9, 100000} {
		in := make([]byte, n)
		for i := range in {
			in[i] = byte('a' + i%26)
		}
		got, total, err := readTail(bytes.NewReader(in), 4)
		want := in[max(0, n-4):]
		if err != nil || !bytes.Equal(got, want) || total != int64(n) {
			t.Errorf("%d bytes: got %q, %d, %v; want %q, %d", n, got, total, err, want, n)
		}
	}
}

// TestAddArchiveAndReadManifest: a nested archive is copied whole, with
// its size and SHA-256 in the manifest, and ReadManifest finds the
// manifest past it.
func TestAddArchiveAndReadManifest(t *testing.T) {
	dir := t.TempDir()
	var inner bytes.Buffer
	iw := NewWriter(&inner, KindAgent, "x", Tool{})
	iw.Add("logs/agent.log", "log", []byte("inner log"))
	iw.Close()
	os.WriteFile(filepath.Join(dir, "own.tar.gz"), inner.Bytes(), 0o600)
	var buf bytes.Buffer
	w := NewWriter(&buf, KindAgentFromCoordinator, "web-1", Tool{})
	steps := []error{
		w.AddArchive("agent/diagnostics.tar.gz", "the agent's", dir, "own.tar.gz", 1<<20),
		w.AddArchive("agent/too-big.tar.gz", "too big", dir, "own.tar.gz", 4),
		w.AddArchive("agent/diagnostics.tar.gz", "twice", dir, "own.tar.gz", 1<<20),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := Read(bytes.NewReader(buf.Bytes()), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Files["agent/diagnostics.tar.gz"], inner.Bytes()) {
		t.Error("the nested archive differs from the file")
	}
	files, err := a.Flatten(1 << 20)
	if err != nil || string(files["agent/diagnostics.tar.gz/logs/agent.log"]) != "inner log" {
		t.Errorf("flattened: got %q, %v; want the inner log", files["agent/diagnostics.tar.gz/logs/agent.log"], err)
	}
	m, err := ReadManifest(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 1 || m.Entries[0].Size != int64(inner.Len()) || len(m.Missing) != 2 {
		t.Errorf("manifest: got %+v, want the nested archive and two missing", m)
	}
	if _, err := ReadManifest(bytes.NewReader(tarGz(t, [2]string{"a", "b"}))); !errors.Is(err, ErrBadArchive) {
		t.Errorf("an archive without a manifest: got %v, want ErrBadArchive", err)
	}
}

// TestRedactString: every secret a free-form value can carry is hidden
// whole, whatever separates its name from what comes before.
func TestRedactString(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"https://h/cb?access_token=AT1&state=s", "https://h/cb?access_token=xxxxx&state=s"},
		{"https://h/?client_secret=CS1", "https://h/?client_secret=xxxxx"},
		{"https://h/?x_api_key=K1&y=2", "https://h/?x_api_key=xxxxx&y=2"},
		{"https://h/?x-api-key=K1", "https://h/?x-api-key=xxxxx"},
		{"https://s3/o?X-Amz-Signature=abc&sig=def", "https://s3/o?X-Amz-Signature=xxxxx&sig=xxxxx"},
		{"https://h/?key=K2", "https://h/?key=xxxxx"},
		{"dsn=postgres://a:b@c/d", "dsn=xxxxx"},
		{"cookie=session123; path=/", "cookie=xxxxx; path=/"},
		{"auth=basic123", "auth=xxxxx"},
		{"password='my secret pw' host=db", "password=xxxxx host=db"},
		{`password="my \"secret\" pw" host=db`, "password=xxxxx host=db"},
		{"host=db sslpassword=kp user=u", "host=db sslpassword=xxxxx user=u"},
		{"postgres://u:p@ss@db:5432/t", "postgres://xxxxx@db:5432/t"},
		{"http://bob:hunter2@proxy:3128 and http://h/x@y", "http://xxxxx@proxy:3128 and http://h/x@y"},
		{"monkey=banana keyboard=qwerty", "monkey=banana keyboard=qwerty"},
	}
	for _, tt := range tests {
		if got := RedactString(tt.in); got != tt.want {
			t.Errorf("RedactString(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSecretName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"password", true}, {"access_token", true}, {"client_secret", true}, {"x_api_key", true},
		{"key", true}, {"ssh_key", true}, {"dsn", true}, {"cookie", true}, {"sig", true}, {"auth", true},
		{"signing_key", false}, {"public_key", false}, {"private_signing_key", true}, {"name", false}, {"keyboard", false}, {"monkey", false}, {"servers", false}, {"design", false},
	}
	for _, tt := range tests {
		if got := SecretName(tt.name); got != tt.want {
			t.Errorf("SecretName(%q): got %v, want %v", tt.name, got, tt.want)
		}
	}
}
