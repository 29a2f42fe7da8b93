package pgtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// crashChildEnv makes the test binary start a cluster and die without
// stopping it, as a panicking or timed-out test binary does.
const crashChildEnv = "PGTEST_CRASH_CHILD"

func TestCrashedTestBinaryLeavesNothingRunning(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		c, err := Start(context.Background())
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Printf("%s %d\n", c.Dir(), c.cmd.Process.Pid)
		os.Exit(3) // no Stop
	}
	shared.Cluster(t) // skips, or fails under CI, without PostgreSQL

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashedTestBinaryLeavesNothingRunning$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1")
	out, err := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("child: got exit code %d (%v), want 3; output:\n%s", code, err, out)
	}
	var dir string
	var pid int
	line, _ := bufio.NewReader(strings.NewReader(string(out))).ReadString('\n')
	if _, err := fmt.Sscanf(line, "%s %d", &dir, &pid); err != nil || !strings.HasPrefix(filepath.Base(dir), dirPrefix) {
		t.Fatalf("child printed %q: %v", out, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	deadline := time.Now().Add(time.Minute)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("postgres (pid %d) still runs after its test binary died", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	removeStale()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster folder after the next start's sweep: got %v, want it removed", err)
	}
}
