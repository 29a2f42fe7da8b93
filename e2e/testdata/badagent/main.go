// Command badagent is a broken agent release for the upgrade tests: it
// passes the smoke test (version --json prints the version it was built
// with) and then fails at what matters. mode "exit" exits as soon as it is
// run; mode "hang" runs forever without ever connecting. Its version is
// stamped into the version package as the agent's is, because the
// coordinator reads it from the binary before storing a package.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/tendrildeploy/tendril/version"
)

// mode is set with -ldflags -X, as is version.Version.
var mode = "exit"

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "version" {
		json.NewEncoder(os.Stdout).Encode(map[string]string{"version": version.Version})
		return
	}
	if mode == "hang" {
		for {
			time.Sleep(time.Hour)
		}
	}
	fmt.Fprintln(os.Stderr, "badagent: this release is broken")
	os.Exit(1)
}
