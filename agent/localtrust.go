package agent

import (
	"errors"
	"path/filepath"
	"strings"

	"github.com/tendrildeploy/tendril/agent/upgrade"
)

// ErrUnsafeHome means the agent home, or a file in it that the agent
// trusts, could be changed by another local user: it is writable by its
// group or by others, or owned by a user other than the agent's (or
// root). The agent refuses to start on such a home, as ssh's StrictModes
// refuses such a ~/.ssh, because whoever can write agent.json chooses the
// coordinator the agent obeys, and whoever can write the keys or the
// binaries chooses what it runs.
var ErrUnsafeHome = errors.New("unsafe agent home")

// trustedPath is a file or folder whose content decides whom the agent
// trusts or what it runs.
type trustedPath struct {
	path string
	// what names it in the refusal, e.g. "agent home".
	what string
	// chmod is the mode argument that makes it safe, e.g. "700".
	chmod string
	// secret is set for private keys, which must not be readable by
	// others either: whoever reads one can act as the agent.
	secret bool
	// tree is set for the home: a wrong owner there usually means the
	// whole tree, so the fix given is a recursive chown.
	tree bool
}

// trustedPaths lists what the agent trusts in home, and exe, the binary an
// upgrade replaces and the agent re-executes (with its folder, where the
// replacement is made), when known. Work and Logs are not listed: tasks
// write there and the agent trusts nothing in them. Nor are the folders
// above the home: a user who replaces the home (or any folder on its
// path) with their own makes a home that user owns, which the owner
// check refuses.
func trustedPaths(home, exe string) []trustedPath {
	certsPath := filepath.Join(home, certsDir)
	paths := []trustedPath{
		{path: home, what: "agent home", chmod: "700", tree: true},
		{path: filepath.Join(home, stateFile), what: "agent registration", chmod: "600"},
		{path: certsPath, what: "agent certificate folder", chmod: "700"},
	}
	for _, s := range []string{currentSlot, nextSlot, previousSlot} {
		sl := certSlot(home, s)
		paths = append(paths,
			trustedPath{path: sl.cert, what: "agent certificate", chmod: "600"},
			trustedPath{path: sl.key, what: "agent private key", chmod: "600", secret: true})
	}
	paths = append(paths,
		// Calamari is run by every task; the agent verifies bundles
		// when it installs them, not at each run.
		trustedPath{path: filepath.Join(home, calamariDir), what: "Calamari folder", chmod: "go-w"},
		// The upgrade state names the binary the watchdog restores and
		// starts; previous is that binary.
		trustedPath{path: upgrade.Dir(home), what: "upgrade folder", chmod: "700"},
		trustedPath{path: upgrade.StatePath(home), what: "upgrade state", chmod: "600"},
		trustedPath{path: filepath.Dir(upgrade.PreviousPath(home)), what: "previous agent binary's folder", chmod: "700"},
		trustedPath{path: upgrade.PreviousPath(home), what: "previous agent binary", chmod: "go-w"},
	)
	if exe != "" {
		paths = append(paths,
			trustedPath{path: filepath.Dir(exe), what: "agent binary's folder", chmod: "go-w"},
			trustedPath{path: exe, what: "agent binary", chmod: "go-w"})
	}
	return paths
}

// CheckHome refuses a home that another local user could change (see
// ErrUnsafeHome), naming each unsafe path and the command that makes it
// safe. Missing files are not a problem here. On Windows it checks
// nothing: access there is a matter of ACLs, which it does not read.
func CheckHome(home string) error {
	abs, err := filepath.Abs(home)
	if err != nil {
		return err
	}
	return checkTrust(abs, "")
}

// unsafeHomeError is the list of problems checkTrust found.
type unsafeHomeError struct{ problems []string }

func (e *unsafeHomeError) Error() string {
	return ErrUnsafeHome.Error() + ": " + strings.Join(e.problems, "; ")
}

func (e *unsafeHomeError) Unwrap() error { return ErrUnsafeHome }
