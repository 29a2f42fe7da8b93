// Command agentstub stands in for tendril-agent in tests that store agent
// packages: a small real Go program stamped like the agent (-ldflags -X
// github.com/tendrildeploy/tendril/version.Version=V), so the coordinator
// can read its version from it, which a byte string posing as an
// executable would not allow. Run, it prints its version as the agent's
// "version --json" does, and exits.
package main

import (
	"os"

	"github.com/tendrildeploy/tendril/version"
)

// tag is set with -X to build different binaries of one version, for
// tests that need other content under a stored version.
var tag = ""

func main() {
	// No encoding/json or fmt: they would triple the binary's size, and
	// tests send it to agents.
	os.Stdout.WriteString(`{"version":"` + version.Version + `","tag":"` + tag + `"}` + "\n")
}
