//go:build unix && !linux

package pgtest

import "syscall"

// sysProcAttr runs a server binary as uid:gid (-1: as this process). Only
// Linux can tie the server's life to the test binary's; elsewhere a
// crashed test run leaves it running until killed.
func sysProcAttr(uid, gid int) *syscall.SysProcAttr {
	if uid < 0 {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}
