package agent

import (
	"os"
	"path/filepath"
	"slices"
)

// successMarker is written last into a Calamari version folder, after
// every file is verified, so its presence means "installed".
const successMarker = "Success.txt"

// calamariVersions lists the Calamari versions installed in home: folders
// of <home>/Calamari that hold the success marker. Full verification
// (signature and hashes) happens before each use, not here.
func calamariVersions(home string) []string {
	versions := []string{} // "none" is an empty list on the wire, not null
	entries, err := os.ReadDir(filepath.Join(home, calamariDir))
	if err != nil {
		return versions
	}
	for _, e := range entries {
		if e.IsDir() && exists(filepath.Join(home, calamariDir, e.Name(), successMarker)) {
			versions = append(versions, e.Name())
		}
	}
	slices.Sort(versions)
	return versions
}
