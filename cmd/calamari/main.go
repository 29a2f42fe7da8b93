// Command calamari is the reference Calamari bundle: the program the
// Tendril agent runs on a deployment target to do deployment work.
//
//	calamari version [--json]
//	calamari run-script (--inline SCRIPT | --file FILE) [--shell sh|bash|cmd|powershell|pwsh]
//	calamari deploy-package --package PKG.tar.gz --target DIR [--release NAME] [--keep N]
//	calamari health
//
// run-script runs the script with /bin/sh (cmd on Windows) in the current
// folder, passes its output through and exits with its exit code. Started
// by an agent that sets TENDRIL_CALAMARI_EXEC=1 (it stops the task's
// process group itself, and reads 128 + the signal from a shell a signal
// killed), run-script on Unix replaces itself with the shell instead.
//
// deploy-package extracts a .tar.gz package, refusing unsafe entries
// (absolute paths, "..", links leaving the release, devices, more than 2
// GiB), into DIR/releases/NAME (default: UTC time and a random suffix),
// switches DIR/current to it atomically, keeps the newest N releases (3 by
// default; never the current one), and prints the release folder. On Unix
// DIR/current is a symbolic link to releases/NAME; on Windows, where
// symbolic links need privileges, DIR/current.txt holds "releases/NAME".
//
// Exit codes: 0 success, the script's own for run-script, 1 for errors
// (with one line "calamari: <reason>" on stderr), 2 for usage errors.
package main

import (
	"context"
	"os"
)

func main() {
	if !awaitStart() {
		os.Exit(exitError)
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
