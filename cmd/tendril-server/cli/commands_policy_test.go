package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
)

// TestPolicyCommandsEndToEnd drives policy show and set against a real
// coordinator started with the deprecated --health-interval 1h.
func TestPolicyCommandsEndToEnd(t *testing.T) {
	dir, _ := startCoordinatorCmd(t)
	steps := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"the flag was copied", []string{"policy", "show"}, 0, "set by                flag", ""},
		{"set", []string{"policy", "set", "--health-interval", "90s", "--calamari-keep", "5"}, 0, "health interval       1m30s", ""},
		{"set by an operator", []string{"policy", "show"}, 0, "set by                operator", ""},
		{"nothing to set", []string{"policy", "set"}, 2, "", "give at least one of"},
		{"interval too short", []string{"policy", "set", "--health-interval", "10ms"}, 2, "", "--health-interval must be at least 1s, got 10ms"},
		{"keep 0", []string{"policy", "set", "--calamari-keep", "0"}, 2, "", "--calamari-keep must be 1 or more, got 0"},
		{"batch 0", []string{"policy", "set", "--upgrade-batch", "0"}, 2, "", "--upgrade-batch must be 1 or more, got 0"},
		{"negative failures", []string{"policy", "set", "--upgrade-max-failures", "-1"}, 2, "", "--upgrade-max-failures must not be negative, got -1"},
		{"negative work keep", []string{"policy", "set", "--work-keep", "-1"}, 2, "", "--work-keep must not be negative, got -1"},
		{"unparseable work min free", []string{"policy", "set", "--work-min-free", "2 gigs"}, 2, "", `--work-min-free: size "2 gigs": not a size`},
		{"negative work min free", []string{"policy", "set", "--work-min-free", "-1GiB"}, 2, "", `--work-min-free: size "-1GiB": must not be negative`},
		{"work retention", []string{"policy", "set", "--work-keep", "20", "--work-min-free", "2048MiB"}, 0, "work min free         2GiB", ""},
		{"work keep shown", []string{"policy", "show"}, 0, "work keep             20", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			code, stdout, stderr := cliIn(t, "", nil, append(s.args, "--data", dir)...)
			if code != s.wantCode || !strings.Contains(stdout, s.wantStdout) || !strings.Contains(stderr, s.wantStderr) {
				t.Fatalf("got %d, stdout %q, stderr %q; want %d with %q and %q", code, stdout, stderr, s.wantCode, s.wantStdout, s.wantStderr)
			}
		})
	}
	code, stdout, stderr := cliIn(t, "", nil, "policy", "show", "--json", "--data", dir)
	var v api.PolicyView
	if err := json.Unmarshal([]byte(stdout), &v); code != 0 || err != nil {
		t.Fatalf("policy show --json: got %d %q %q (%v)", code, stdout, stderr, err)
	}
	want := api.PolicyView{HealthInterval: "1m30s", HealthIntervalSeconds: 90, CalamariKeep: 5, UpgradeBatch: 10, UpgradeMaxFailures: 0,
		WorkKeep: 20, WorkMinFree: "2GiB", WorkMinFreeBytes: 2 << 30, SetBy: "operator"}
	got := v
	got.UpdatedAt = nil
	if got != want || v.UpdatedAt == nil {
		t.Fatalf("policy show --json: got %+v, want %+v with an update time", v, want)
	}
}
