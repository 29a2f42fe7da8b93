//go:build windows

package diag

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// OpenInside opens the regular file rel inside the folder dir for
// reading without following a symbolic link or junction below dir (see
// the Unix version for why). Windows has no O_NOFOLLOW for every element
// of a path, so the file is opened through an os.Root, which refuses any
// link out of dir, and every element is then checked not to be a link,
// and the file opened to be the one checked.
func OpenInside(dir, rel string) (*os.File, fs.FileInfo, error) {
	path := filepath.Join(dir, rel)
	if rel == "" || !filepath.IsLocal(rel) {
		return nil, nil, fmt.Errorf("open %s: not a path inside the folder", path)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	walked := ""
	for p := range strings.SplitSeq(filepath.Clean(rel), string(filepath.Separator)) {
		walked = filepath.Join(walked, p)
		lst, err := root.Lstat(walked)
		if err != nil {
			f.Close()
			return nil, nil, err
		}
		if lst.Mode()&(fs.ModeSymlink|fs.ModeIrregular) != 0 {
			f.Close()
			return nil, nil, fmt.Errorf("open %s: %s is a link, which diagnostics does not follow", path, walked)
		}
		if walked == filepath.Clean(rel) && !os.SameFile(lst, st) {
			f.Close()
			return nil, nil, fmt.Errorf("open %s: replaced while it was opened", path)
		}
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file (%s): not read", path, st.Mode().Type())
	}
	return f, st, nil
}
