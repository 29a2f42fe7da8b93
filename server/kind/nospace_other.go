//go:build !unix && !windows

package kind

// noSpaceErrnos is empty where the file system's errors are not known:
// only errors of kind ErrNoSpace are recognised.
var noSpaceErrnos []error
