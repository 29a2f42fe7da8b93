//go:build !windows

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkTrust checks every trusted path of home (and exe, if not "") for
// the agent's effective user: see ErrUnsafeHome.
func checkTrust(home, exe string) error {
	uid := os.Geteuid()
	var problems []string
	for _, p := range trustedPaths(home, exe) {
		problem, err := checkPath(p, uid)
		if err != nil {
			return fmt.Errorf("check agent home: %w", err)
		}
		if problem != "" {
			problems = append(problems, problem)
		}
	}
	if len(problems) > 0 {
		return &unsafeHomeError{problems: problems}
	}
	return nil
}

// checkPath says what is unsafe about one path, "" if nothing is. It
// follows symbolic links: what matters is the file read.
func checkPath(p trustedPath, uid int) (string, error) {
	fi, err := os.Stat(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("stat %s: no owner", p.path)
	}
	// Root may own it, as ssh allows: root can change it anyway.
	if owner := int(st.Uid); owner != uid && owner != 0 {
		recursive := ""
		if p.tree {
			recursive = "-R "
		}
		return fmt.Sprintf("%s %s is owned by uid %d, not this agent's uid %d: run chown %s%d %s",
			p.what, p.path, owner, uid, recursive, uid, p.path), nil
	}
	mode := fi.Mode()
	if who := whom(mode.Perm(), 0o020, 0o002); who != "" {
		return fmt.Sprintf("%s %s is writable by %s (mode %s): run chmod %s %s", p.what, p.path, who, octal(mode), p.chmod, p.path), nil
	}
	if who := whom(mode.Perm(), 0o040, 0o004); p.secret && who != "" {
		return fmt.Sprintf("%s %s is readable by %s (mode %s): run chmod %s %s", p.what, p.path, who, octal(mode), p.chmod, p.path), nil
	}
	return "", nil
}

// whom names who besides the owner holds a permission, given its group
// and other bits.
func whom(perm fs.FileMode, group, other fs.FileMode) string {
	switch g, o := perm&group != 0, perm&other != 0; {
	case g && o:
		return "its group and others"
	case g:
		return "its group"
	case o:
		return "others"
	}
	return ""
}

// octal is mode as chmod writes it, with the sticky, setgid and setuid
// bits: 0777, 1777.
func octal(mode fs.FileMode) string {
	m := uint32(mode.Perm())
	if mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	if mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	return fmt.Sprintf("%04o", m)
}
