//go:build unix

package kind

import "syscall"

// noSpaceErrnos are the errors of a write the file system had no room
// for: a full disk and an exhausted quota.
var noSpaceErrnos = []error{syscall.ENOSPC, syscall.EDQUOT}
