package kind

import "syscall"

// noSpaceErrnos are the errors of a write the file system had no room
// for: ERROR_DISK_FULL and ERROR_HANDLE_DISK_FULL, which the syscall
// package does not name.
var noSpaceErrnos = []error{syscall.Errno(112), syscall.Errno(39)}
