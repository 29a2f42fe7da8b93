package client

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/internal/servertest"
)

func TestAgentPackagesAndRollouts(t *testing.T) {
	co := startCoordinator(t)
	c := newClient(t, co.url, co.init.AdminKey)
	ctx := testContext(t)

	// A real Go program stamped 1.2.0: the coordinator reads the version
	// built into a package and refuses one that says otherwise.
	bin := servertest.AgentBinary(t, "1.2.0", "linux", "amd64")
	other := servertest.AgentBinary(t, "1.2.0", "linux", "amd64", "other")
	for _, tc := range []struct {
		name, version, os string
		body              []byte
		status            int
		want              string
		created           bool
	}{
		{"new", "1.2.0", "linux", bin, 0, "", true},
		{"same again", "1.2.0", "linux", bin, 0, "", false},
		{"other content", "1.2.0", "linux", other, http.StatusConflict, "already stored with other content", false},
		{"another built-in version", "1.4.0", "linux", bin, http.StatusBadRequest, "the binary says it is 1.2.0 but --version is 1.4.0", false},
		{"not an executable", "1.3.0", "linux", []byte("hello"), http.StatusBadRequest, "file is not a linux executable", false},
		{"bad version", "one", "linux", bin, http.StatusBadRequest, "not a semantic version", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := c.UploadAgentPackage(ctx, tc.version, tc.os, "amd64", bytes.NewReader(tc.body), int64(len(tc.body)))
			if tc.status != 0 {
				if !IsStatus(err, tc.status) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want HTTP %d with %q", err, tc.status, tc.want)
				}
				return
			}
			if err != nil || v.Created != tc.created || v.Version != tc.version || v.Size != int64(len(tc.body)) {
				t.Fatalf("got %+v, %v", v, err)
			}
		})
	}
	ps, err := c.AgentPackages(ctx)
	if err != nil || len(ps) != 1 || ps[0].Version != "1.2.0" || ps[0].OS != "linux" {
		t.Fatalf("list: got %+v, %v", ps, err)
	}

	if _, err := c.StartRollout(ctx, api.RolloutRequest{Environment: "Nowhere"}); !IsStatus(err, http.StatusNotFound) || !strings.Contains(err.Error(), `environment "Nowhere" has no agents`) {
		t.Fatalf("empty environment: got %v, want 404", err)
	}
	if _, err := c.StartRollout(ctx, api.RolloutRequest{}); !IsStatus(err, http.StatusBadRequest) {
		t.Fatalf("no target: got %v, want 400", err)
	}
	if _, err := c.Rollout(ctx, "nope"); !IsStatus(err, http.StatusNotFound) {
		t.Fatalf("unknown rollout: got %v, want 404", err)
	}
	if rs, err := c.Rollouts(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("rollouts: got %+v, %v; want none", rs, err)
	}
	for name, call := range map[string]func() (api.RolloutView, error){
		"halt":   func() (api.RolloutView, error) { return c.HaltRollout(ctx, "nope") },
		"resume": func() (api.RolloutView, error) { return c.ResumeRollout(ctx, "nope") },
	} {
		if _, err := call(); !IsStatus(err, http.StatusNotFound) || !strings.Contains(err.Error(), name+` rollout nope: no rollout "nope"`) {
			t.Errorf("%s an unknown rollout: got %v, want 404 naming it", name, err)
		}
	}
	if _, err := c.HaltRollout(ctx, ""); err == nil || !strings.Contains(err.Error(), "no rollout id given") {
		t.Errorf("halt without an id: got %v, want it refused before any request", err)
	}
}
