package agent

import (
	"slices"
	"testing"
)

// TestCalamariPushKeep checks that a push's Keep (the coordinator's
// machine policy) decides how many versions stay, and that without one the
// agent's own setting does.
func TestCalamariPushKeep(t *testing.T) {
	c := newTestCoordinator(t)
	home := registered(t, c)
	a := startAgent(t, home, nil)
	a.waitConnected(t, 1)
	s := c.live()

	steps := []struct {
		version    string
		keep       int
		wantPruned []string
		wantOnDisk []string
	}{
		// The agent's default keeps 3.
		{"1.0.0", 0, nil, []string{"1.0.0"}},
		{"1.1.0", 0, nil, []string{"1.0.0", "1.1.0"}},
		{"1.2.0", 0, nil, []string{"1.0.0", "1.1.0", "1.2.0"}},
		// The policy says 2: the oldest goes.
		{"1.3.0", 2, []string{"1.0.0", "1.1.0"}, []string{"1.2.0", "1.3.0"}},
		// The policy says 1.
		{"1.4.0", 1, []string{"1.2.0", "1.3.0"}, []string{"1.4.0"}},
	}
	for _, st := range steps {
		b := newTestBundle(t, c, st.version)
		b.push.Keep = st.keep
		_, inst, err := c.pushBundle(s, b)
		if err != nil {
			t.Fatalf("push %s keep %d: %v", st.version, st.keep, err)
		}
		if !slices.Equal(inst.Pruned, st.wantPruned) {
			t.Errorf("push %s keep %d: got pruned %v, want %v", st.version, st.keep, inst.Pruned, st.wantPruned)
		}
		versions, _ := versionsOnDisk(t, home)
		slices.Sort(versions)
		if !slices.Equal(versions, st.wantOnDisk) {
			t.Errorf("after push %s keep %d: got %v on disk, want %v", st.version, st.keep, versions, st.wantOnDisk)
		}
	}
}
