// Package tartype names tar entry types for people, in the errors about
// refused archive entries that both the agent (bundles) and calamari
// (deployment packages) write. It is its own package so that calamari,
// which starts for every task, does not link the bundle package and the
// certificate and key code that comes with it.
package tartype

import (
	"archive/tar"
	"fmt"
)

// Name names a tar entry type for a person: "regular file", "symbolic
// link", and so on.
func Name(t byte) string {
	switch t {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeDir:
		return "folder"
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "named pipe"
	case tar.TypeXGlobalHeader:
		return "PAX global header"
	case tar.TypeGNUSparse:
		return "sparse file"
	default:
		return fmt.Sprintf("tar entry of type %q", t)
	}
}
