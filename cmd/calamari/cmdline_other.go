//go:build !windows

package main

import "os/exec"

// setCmdLine does nothing: only Windows has a command line to set.
func setCmdLine(*exec.Cmd, string) {}
