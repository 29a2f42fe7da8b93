package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// netNS is a network namespace the test made: a host whose only link is a
// point-to-point one to this machine, which reaches it at nsIP. It has no
// route anywhere else, and this machine's loopback, where the coordinator
// listens, is not its own: from inside it the coordinator cannot be
// dialed.
type netNS struct {
	name   string
	hostIP string // this machine's end of the link
	nsIP   string // the namespace's end
}

var netNSCount atomic.Int32

// newNetNS makes a namespace and its link, removed when the test ends.
func newNetNS(t *testing.T) *netNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	n := int(netNSCount.Add(1))
	id := (os.Getpid()*7 + n) % 250
	ns := &netNS{
		name:   fmt.Sprintf("tendril-e2e-%d-%d", os.Getpid(), n),
		hostIP: fmt.Sprintf("10.231.%d.1", id),
		nsIP:   fmt.Sprintf("10.231.%d.2", id),
	}
	hostLink, nsLink := fmt.Sprintf("tdl%dh%d", id, n), fmt.Sprintf("tdl%dn%d", id, n)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns.name).Run()
		exec.Command("ip", "link", "del", hostLink).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", ns.name},
		{"link", "add", hostLink, "type", "veth", "peer", "name", nsLink},
		{"link", "set", nsLink, "netns", ns.name},
		{"addr", "add", ns.hostIP + "/30", "dev", hostLink},
		{"link", "set", hostLink, "up"},
		{"-n", ns.name, "addr", "add", ns.nsIP + "/30", "dev", nsLink},
		{"-n", ns.name, "link", "set", nsLink, "up"},
		{"-n", ns.name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return ns
}

// command runs path inside the namespace.
func (ns *netNS) command(path string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.name, path}, args...)...)
}
