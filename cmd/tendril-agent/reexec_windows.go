//go:build windows

package main

import "errors"

// reexec is not possible on Windows; upgrades are refused there until
// they go through the service manager, so Run never asks for it.
func reexec(string) error {
	return errors.New("restart into the new version: not supported on Windows")
}
