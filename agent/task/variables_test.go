package task

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/servicemsg"
)

// secret is a sensitive value no other output of these tests contains.
const secret = "hunter2-Zq9"

// taskFiles returns every byte under dir, for a search of what must not
// be at rest.
func taskFiles(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		all = append(all, b...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func TestSensitiveValuesMasked(t *testing.T) {
	r := newRunner(t)
	multi := "first-line-Kp7\nsecond-line-Wx3"
	script := strings.Join([]string{
		`echo "region=$REGION"`,
		`echo "plain $SECRET in a line"`,
		// One value split across two writes of the process.
		`printf 'split %s' "${SECRET%???}"; printf '%s\n' "${SECRET#????????}"`,
		// A line too long for one log entry, the value across the cut.
		`head -c 65530 /dev/zero | tr '\0' x; printf '%s\n' "$SECRET"`,
		`printf '%s\n' "$MULTI"`,
		`echo "$SECRET" >&2`,
		// The last line, with no newline, before the exit.
		`printf 'last %s' "$SECRET"`,
	}, "\n")
	startTask(t, r, protocol.TaskStart{Ticket: "mask", Args: []string{"-c", script}, Variables: []protocol.Variable{
		{Name: "REGION", Value: "eu-west"},
		{Name: "SECRET", Value: secret, Sensitive: true},
		{Name: "MULTI", Value: multi, Sensitive: true},
	}})
	entries, end := followAll(t, r, "mask")
	if end.State != protocol.TaskSucceeded {
		t.Fatalf("got state %s (%s), want succeeded", end.State, end.Error)
	}
	var text strings.Builder
	for _, e := range entries {
		text.WriteString(e.Text + "\n")
	}
	log := text.String()
	for _, leak := range []string{secret, secret[:8], secret[8:], "first-line-Kp7", "second-line-Wx3"} {
		if strings.Contains(log, leak) && leak != secret[8:] {
			t.Errorf("log holds %q:\n%.2000s", leak, log)
		}
	}
	for _, want := range []string{"region=eu-west", "plain " + Mask + " in a line", "split " + Mask, "last " + Mask} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%.2000s", want, log)
		}
	}
	if n := strings.Count(log, Mask); n != 7 {
		t.Errorf("got %d masks in the log, want 7", n)
	}
	if rest := taskFiles(t, r.taskDir("mask")); bytes.Contains(rest, []byte(secret)) || bytes.Contains(rest, []byte("first-line-Kp7")) {
		t.Error("a sensitive value is in the task's folder")
	}
}

func TestMaskerSafeCut(t *testing.T) {
	m := newMasker([]string{"abcd"})
	tests := []struct {
		in   string
		at   int
		want int
	}{
		{"xxabcdxx", 1, 1},
		{"xxabcdxx", 2, 2},
		{"xxabcdxx", 3, 2},
		{"xxabcdxx", 5, 2},
		{"xxabcdxx", 6, 6},
		{"abcdxxxx", 2, 4}, // at the start: cut after it
	}
	for _, tt := range tests {
		if got := m.safeCut([]byte(tt.in), tt.at); got != tt.want {
			t.Errorf("safeCut(%q, %d): got %d, want %d", tt.in, tt.at, got, tt.want)
		}
	}
	if newMasker([]string{"", "***"}) != nil {
		t.Error("values that cannot be masked: got a masker, want nil")
	}
}

func TestStartRefusesBadVariables(t *testing.T) {
	r := newRunner(t)
	tests := []struct {
		name string
		vars []protocol.Variable
		want string
	}{
		{"space in name", []protocol.Variable{{Name: "MY VAR", Value: "x"}}, "letters, digits"},
		{"equals in name", []protocol.Variable{{Name: "A=B", Value: "x"}}, "letters, digits"},
		{"agent's prefix", []protocol.Variable{{Name: "TENDRIL_HOME", Value: "/"}}, "are the agent's"},
		{"twice", []protocol.Variable{{Name: "A", Value: "1"}, {Name: "A", Value: "2"}}, "given twice"},
		{"NUL", []protocol.Variable{{Name: "A", Value: "a\x00b"}}, "NUL"},
		{"too large", []protocol.Variable{{Name: "A", Value: strings.Repeat("x", protocol.MaxVariableBytes)}}, "at most"},
	}
	for _, tt := range tests {
		_, err := r.Start(context.Background(), protocol.TaskStart{Ticket: "bad", Calamari: "1", Args: []string{"-c", "true"}, Variables: tt.vars})
		if !errors.Is(err, protocol.ErrInvalidVariables) || !IsBadRequest(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want a bad request saying %q", tt.name, err, tt.want)
		}
	}
	if _, err := os.Stat(r.taskDir("bad")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused task left its folder: %v", err)
	}
}

func TestServiceMessages(t *testing.T) {
	r := newRunner(t)
	r.cfg.MaxArtifactSize = 100
	home := filepath.Dir(r.cfg.Dir)
	outside := filepath.Join(home, "outside.txt")
	if err := os.WriteFile(outside, []byte("not the task's"), 0o600); err != nil {
		t.Fatal(err)
	}
	line := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	script := strings.Join([]string{
		`mkdir out && echo report > out/report.txt && head -c 101 /dev/zero > big.bin`,
		`ln -s ` + outside + ` link.txt && mkdir folder`,
		`echo "$M1"; echo "$M2"; echo "$M3"; echo "$M4"; echo "$M5"; echo "$M6"; echo "$M7"; echo "$M8"`,
		`echo "$M2" >&2`, // only stdout carries service messages
	}, "\n")
	vars := []protocol.Variable{
		{Name: "M1", Value: line(servicemsg.SetOutput("VERSION", "1.2.3"))},
		{Name: "M2", Value: line(servicemsg.Artifact("out/report.txt"))},
		{Name: "M3", Value: line(servicemsg.Artifact("../outside.txt"))},
		{Name: "M4", Value: line(servicemsg.Artifact("link.txt"))},
		{Name: "M5", Value: line(servicemsg.Artifact("big.bin"))},
		{Name: "M6", Value: "##tendril[set-output my name eA==]"},
		{Name: "M7", Value: line(servicemsg.SetOutput("TOKEN", "is "+secret))},
		{Name: "M8", Value: line(servicemsg.Artifact("folder"))},
		{Name: "S", Value: secret, Sensitive: true},
	}
	startTask(t, r, protocol.TaskStart{Ticket: "svc", Args: []string{"-c", script}, Variables: vars})
	entries, end := followAll(t, r, "svc")
	if end.State != protocol.TaskSucceeded {
		t.Fatalf("got state %s (%s), want succeeded", end.State, end.Error)
	}
	for _, want := range []string{
		`output VERSION = "1.2.3"`,
		"artifact report.txt attached (7 bytes)",
		"artifact ../outside.txt not attached: it is outside the task's folder",
		"artifact link.txt not attached: open:",
		"artifact big.bin not attached: it is 101 bytes, over the limit of 100",
		"ignored a line that looks like a service message: malformed service message: want set-output NAME BASE64-VALUE (an output name has no spaces)",
		"artifact folder not attached: it is not a regular file",
	} {
		e, ok := entryWith(entries, want)
		if !ok || e.Stream != streamAgent {
			t.Errorf("log lacks an agent line %q (got %+v)", want, e)
		}
	}
	if e, ok := entryWith(entries, servicemsg.Prefix); !ok || e.Stream != streamStderr {
		t.Errorf("got %+v, want the service message line only as stderr output", e)
	}
	wantOutputs := map[string]string{"VERSION": "1.2.3", "TOKEN": "is " + Mask}
	if len(end.Outputs) != 2 || end.Outputs["VERSION"] != wantOutputs["VERSION"] || end.Outputs["TOKEN"] != wantOutputs["TOKEN"] {
		t.Errorf("got outputs %v, want %v", end.Outputs, wantOutputs)
	}
	if len(end.Artifacts) != 1 || end.Artifacts[0].Name != "report.txt" || end.Artifacts[0].Size != 7 {
		t.Fatalf("got artifacts %+v, want report.txt of 7 bytes", end.Artifacts)
	}
	// The artifact is a copy: what the script does to its file later
	// does not change it.
	if err := os.Remove(filepath.Join(r.taskDir("svc"), "out", "report.txt")); err != nil {
		t.Fatal(err)
	}
	f, a, err := r.OpenArtifact("svc", "report.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(b) != "report\n" || a != end.Artifacts[0] {
		t.Errorf("OpenArtifact: got %q %+v %v, want \"report\\n\" %+v", b, a, err, end.Artifacts[0])
	}
	for _, name := range []string{"big.bin", "nope.txt", "../task.json"} {
		if _, _, err := r.OpenArtifact("svc", name); err == nil || !IsBadRequest(err) {
			t.Errorf("OpenArtifact(%q): got %v, want a bad request", name, err)
		}
	}
	// After the agent restarts, the result still lists them.
	r2, err := New(Config{Dir: r.cfg.Dir, Resolve: r.cfg.Resolve})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(context.Background())
	_, end2, err := collect(context.Background(), r2, "svc", 1)
	if err != nil || len(end2.Artifacts) != 1 || end2.Outputs["VERSION"] != "1.2.3" {
		t.Errorf("after a restart: got %+v, %v; want the same outputs and artifacts", end2, err)
	}
	if bytes.Contains(taskFiles(t, r.taskDir("svc")), []byte(secret)) {
		t.Error("a sensitive value is in the task's folder")
	}
}

// FuzzMaskedOutput writes output holding a sensitive value, in writes cut
// anywhere, and checks that no log entry holds the value.
func FuzzMaskedOutput(f *testing.F) {
	f.Add([]byte("before "), []byte(" after\nmore"), uint16(3), uint16(9))
	f.Add([]byte{}, []byte{}, uint16(0), uint16(1))
	f.Fuzz(func(t *testing.T, before, after []byte, cut1, cut2 uint16) {
		out := append(append(bytes.Clone(before), secret...), after...)
		// A long line too, so the cut of an over-long line is exercised.
		if cut1%5 == 0 {
			out = append(bytes.Repeat([]byte("x"), maxLine-int(cut2)%len(secret)-1), out...)
		}
		dir := t.TempDir()
		tk, err := openTask("t", dir, "")
		if err != nil {
			t.Fatal(err)
		}
		tk.mask = newMasker([]string{secret})
		w := &lineWriter{t: tk, stream: streamStdout}
		a, b := min(int(cut1), len(out)), min(int(cut2), len(out))
		a, b = min(a, b), max(a, b)
		for _, chunk := range [][]byte{out[:a], out[a:b], out[b:]} {
			w.Write(chunk)
		}
		w.flush()
		tk.closeLog()
		for _, e := range readLog(t, dir) {
			if strings.Contains(e.Text, secret) {
				t.Fatalf("entry %d holds the value: %.80q", e.Seq, e.Text)
			}
		}
	})
}
