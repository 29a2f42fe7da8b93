package pgtest

import "syscall"

// sysProcAttr runs a server binary as uid:gid (-1: as this process) and,
// on Linux, has it sent SIGQUIT, PostgreSQL's immediate shutdown, if the
// test binary dies without stopping it.
func sysProcAttr(uid, gid int) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
	if uid >= 0 {
		a.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return a
}
