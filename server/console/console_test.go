package console

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/server/healthlog"
)

func TestSigninLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newSigninLimiter()
	l.now = func() time.Time { return now }
	fail := func(user, addr string) time.Duration {
		t.Helper()
		a, wait := l.begin(user, addr)
		if a == nil && wait <= 0 {
			t.Fatal("refused without a wait")
		}
		return wait
	}

	// One address trying many names is stopped after signinAddrBurst.
	for i := range signinAddrBurst {
		if w := fail("user-"+strconv.Itoa(i), "192.0.2.1:1234"); w != 0 {
			t.Fatalf("failure %d: got a wait of %s, want none yet", i+1, w)
		}
	}
	if w := fail("someone-new", "192.0.2.1:999"); w <= 0 || w > signinAddrEvery {
		t.Fatalf("address over its limit: got a wait of %s, want up to %s", w, signinAddrEvery)
	}
	// Another address is not.
	if w := fail("someone-new", "192.0.2.2:1"); w != 0 {
		t.Fatalf("another address: got a wait of %s, want none", w)
	}
	// Addresses of one IPv6 /64 share their limit; IPv4-mapped ones are
	// their IPv4 address.
	for _, tt := range []struct{ in, want string }{
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:80", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"192.0.2.1:80", "192.0.2.1"},
		{"not an address", "not an address"},
	} {
		if got := clientKey(tt.in); got != tt.want {
			t.Errorf("clientKey(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
	// Time refills the bucket: one more attempt per interval.
	now = now.Add(signinAddrEvery)
	if w := fail("later", "192.0.2.1:1"); w != 0 {
		t.Fatalf("after %s: got a wait of %s, want one attempt allowed", signinAddrEvery, w)
	}
	if w := fail("later", "192.0.2.1:1"); w <= 0 {
		t.Fatal("second attempt after one interval: got no wait, want one")
	}
	// Successes give their tokens back.
	for range 3 * signinUserBurst {
		a, w := l.begin("carol", "198.51.100.7:1")
		if a == nil {
			t.Fatalf("successful sign-ins: got a wait of %s, want none", w)
		}
		a.succeeded()
	}
	// The table stays bounded.
	for i := range maxSigninBuckets + 10 {
		l.begin("", "10.0."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256)+":1")
	}
	if n := len(l.buckets); n > maxSigninBuckets {
		t.Fatalf("got %d buckets, want at most %d", n, maxSigninBuckets)
	}
}

func TestConsoleRolloutBatches(t *testing.T) {
	v := api.RolloutView{Agents: []api.RolloutAgentView{
		{Agent: "old", Batch: 0, State: api.UpgradeSucceeded},
		{Agent: "a", Batch: 1, State: api.UpgradeSucceeded},
		{Agent: "b", Batch: 1, State: api.UpgradeRolledBack},
		{Agent: "c", Batch: 2, State: api.UpgradeSending},
		{Agent: "d", Batch: 2, State: api.UpgradeQueued},
		{Agent: "e", Batch: 3, State: api.UpgradeQueued},
	}}
	got := rolloutBatches(v)
	want := []struct {
		number      int
		state       string
		done, total int
	}{{0, "done", 1, 1}, {1, "failed", 2, 2}, {2, "running", 0, 2}, {3, "queued", 0, 1}}
	if len(got) != len(want) {
		t.Fatalf("got %d batches, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Number != w.number || g.StateKey != w.state || g.Done != w.done || g.Total != w.total {
			t.Errorf("batch %d: got number %d state %s %d/%d, want %d %s %d/%d", i, g.Number, g.StateKey, g.Done, g.Total, w.number, w.state, w.done, w.total)
		}
	}
}

func TestHealthChartLayout(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name                  string
		points                []healthlog.Point
		wantCoords, wantMarks int
		wantMax               float64
	}{
		{"none", nil, 0, 0, 0},
		{"one", []healthlog.Point{{At: at, RTT: 2 * time.Millisecond, Health: api.HealthHealthy}}, 1, 0, 2},
		{"with a failure", []healthlog.Point{
			{At: at, RTT: 2 * time.Millisecond, Health: api.HealthHealthy},
			{At: at.Add(time.Minute), RTT: 10 * time.Second, Health: api.HealthUnhealthy},
			{At: at.Add(2 * time.Minute), RTT: 0, Health: api.HealthHealthy},
		}, 3, 1, 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := layoutHealthChart(tt.points)
			coords := 0
			if c.Line != "" {
				coords = len(strings.Fields(c.Line))
			}
			if coords != tt.wantCoords || len(c.Marks) != tt.wantMarks || c.MaxMillis != tt.wantMax {
				t.Fatalf("got %d coordinates, %d marks, max %.1f; want %d, %d, %.1f", coords, len(c.Marks), c.MaxMillis, tt.wantCoords, tt.wantMarks, tt.wantMax)
			}
			for _, xy := range strings.Fields(c.Line) {
				var x, y float64
				if _, err := fmt.Sscanf(xy, "%g,%g", &x, &y); err != nil || x < 0 || x > chartWidth || y < 0 || y > chartHeight {
					t.Fatalf("coordinate %q: want x in 0..%d and y in 0..%d (%v)", xy, chartWidth, chartHeight, err)
				}
			}
		})
	}
}

func TestConsoleSafeNext(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/tasks", "/tasks"},
		{"/machines/web-1?x=1", "/machines/web-1?x=1"},
		{"https://evil.example/", "/"},
		{"//evil.example/", "/"},
		{"/\\evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"tasks", "/"},
		{"/a\r\nSet-Cookie: x=1", "/"},
	}
	for _, tt := range tests {
		if got := safeLocal(tt.in); got != tt.want {
			t.Errorf("safeLocal(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestClassifyMachine(t *testing.T) {
	base := api.AgentView{Connected: true, Health: api.HealthHealthy, CalamariCurrent: true, CalamariVersion: "3.0.0", Upgrade: api.UpgradeNone}
	tests := []struct {
		name       string
		mod        func(*api.AgentView)
		want       string
		wantBadges []string
	}{
		{"healthy", func(*api.AgentView) {}, "healthy", nil},
		{"legacy TLS", func(v *api.AgentView) { v.Health = api.HealthWarning }, "warning", nil},
		{"calamari behind keeps the health", func(v *api.AgentView) { v.Health, v.CalamariCurrent = api.HealthWarning, false }, "warning", nil},
		{"upgrade recommended keeps the health", func(v *api.AgentView) { v.Upgrade = api.UpgradeRecommended }, "healthy", []string{"upgrade-recommended"}},
		{"upgrade recommended on a warning", func(v *api.AgentView) { v.Health, v.Upgrade = api.HealthWarning, api.UpgradeRecommended }, "warning", []string{"upgrade-recommended"}},
		{"upgrade required", func(v *api.AgentView) {
			v.Health, v.Upgrade, v.CalamariCurrent = api.HealthWarning, api.UpgradeRequired, false
		}, "warning", []string{"upgrade-required"}},
		{"unhealthy with an upgrade", func(v *api.AgentView) { v.Health, v.Upgrade = api.HealthUnhealthy, api.UpgradeRecommended }, "unhealthy", []string{"upgrade-recommended"}},
		{"unavailable", func(v *api.AgentView) {
			v.Connected, v.Health, v.CalamariCurrent = false, api.HealthUnavailable, false
		}, "unavailable", nil},
	}
	for _, tt := range tests {
		v := base
		tt.mod(&v)
		m := classify(v, "3.0.0")
		var badges []string
		for _, s := range m.Badges {
			badges = append(badges, s.Key)
		}
		if m.State.Key != tt.want || strings.Join(badges, ",") != strings.Join(tt.wantBadges, ",") {
			t.Errorf("%s: got %s %v, want %s %v", tt.name, m.State.Key, badges, tt.want, tt.wantBadges)
		}
	}
}

func TestMachineCalamari(t *testing.T) {
	tests := []struct {
		name     string
		current  bool
		has      string
		latest   string
		wantKey  string
		wantText string
	}{
		{"current", true, "3.0.0", "3.0.0", "current", "Calamari current (3.0.0)"},
		{"behind", false, "2.0.0", "3.0.0", "outdated", "Calamari out of date: it has 2.0.0; the latest is 3.0.0"},
		{"none installed", false, "", "3.0.0", "outdated", "Calamari out of date: it has none; the latest is 3.0.0"},
		{"nothing uploaded", true, "", "", "no-bundle", "no Calamari uploaded yet"},
	}
	for _, tt := range tests {
		got := machineCalamari(api.AgentView{CalamariCurrent: tt.current, CalamariVersion: tt.has}, tt.latest)
		if got.Key != tt.wantKey || got.Text != tt.wantText {
			t.Errorf("%s: got %s %q, want %s %q", tt.name, got.Key, got.Text, tt.wantKey, tt.wantText)
		}
	}
}

func TestEnvironmentCalamari(t *testing.T) {
	tests := []struct {
		name     string
		outdated int
		machines int
		latest   string
		wantKey  string
		wantText string
	}{
		{"all current", 0, 3, "3.0.0", "current", "Calamari current on all 3 machines (3.0.0)"},
		{"one machine current", 0, 1, "3.0.0", "current", "Calamari current (3.0.0)"},
		{"some behind", 1, 3, "3.0.0", "outdated", "Calamari out of date on 1 of 3 machines: the latest, 3.0.0, is missing"},
		{"the only one behind", 1, 1, "3.0.0", "outdated", "Calamari out of date on 1 of 1 machine: the latest, 3.0.0, is missing"},
		{"nothing uploaded", 0, 2, "", "no-bundle", "no Calamari uploaded yet"},
	}
	for _, tt := range tests {
		got := environmentCalamari(fleetCounts{CalamariOutdated: tt.outdated}, tt.machines, tt.latest)
		if got.Key != tt.wantKey || got.Text != tt.wantText {
			t.Errorf("%s: got %s %q, want %s %q", tt.name, got.Key, got.Text, tt.wantKey, tt.wantText)
		}
	}
}

func TestUpgradeBlocked(t *testing.T) {
	linux := []api.AgentPackageView{{Version: "2.0.0", OS: "linux", Arch: "amd64"}}
	tests := []struct {
		name         string
		pkgs         []api.AgentPackageView
		goos, goarch string
		want         string // a part of the reason; "" for none
	}{
		{"no package at all", nil, "linux", "amd64", "tendril-server agent-package push"},
		{"no package, platform unknown", nil, "", "", "nothing to upgrade to"},
		{"a package for the platform", linux, "linux", "amd64", ""},
		{"none for the platform", linux, "linux", "arm64", "No agent package for linux/arm64"},
		{"platform not known yet", linux, "", "", ""},
	}
	for _, tt := range tests {
		got := upgradeBlocked(tt.pkgs, tt.goos, tt.goarch)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestOnlyAdminKey(t *testing.T) {
	admin := func(id string) api.APIKeyView { return api.APIKeyView{ID: id, Admin: true} }
	revoked := admin("old")
	revoked.Revoked = true
	tests := []struct {
		name string
		keys []api.APIKeyView
		want string
	}{
		{"none", nil, ""},
		{"one admin among others", []api.APIKeyView{{ID: "ci"}, admin("a"), revoked}, "a"},
		{"two admins", []api.APIKeyView{admin("a"), admin("b")}, ""},
		{"only standard keys", []api.APIKeyView{{ID: "ci"}}, ""},
	}
	for _, tt := range tests {
		if got := onlyAdminKey(tt.keys); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestConsoleSessionExpiry(t *testing.T) {
	cs := newConsoleSessions()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cs.now = func() time.Time { return now }
	id, csrf := cs.create("hash")
	if si, ok := cs.get(id); !ok || si.csrf != csrf || si.keyHash != "hash" {
		t.Fatalf("fresh session: got %+v %v, want it found with its token", si, ok)
	}
	// Use keeps a session alive past the idle time...
	start := now
	for now.Add(consoleIdle / 2).Before(start.Add(consoleMaxAge)) {
		now = now.Add(consoleIdle / 2)
		if _, ok := cs.get(id); !ok {
			t.Fatalf("session in use ended after %s, want it kept until its maximum age %s", now.Sub(start), consoleMaxAge)
		}
	}
	// ...but not past its maximum age.
	now = start.Add(consoleMaxAge)
	if _, ok := cs.get(id); ok {
		t.Fatalf("session still live after %s, want it ended", consoleMaxAge)
	}
	// An idle one ends after the idle time, and sign-ins purge it.
	id2, _ := cs.create("hash")
	now = now.Add(consoleIdle)
	if _, ok := cs.get(id2); ok {
		t.Fatal("idle session still live after the idle time")
	}
	cs.create("hash")
	if n := cs.count(); n != 1 {
		t.Fatalf("got %d sessions kept, want 1 (expired ones purged)", n)
	}
}
