package task

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tendrildeploy/tendril/protocol"
)

// artifactsDir holds the copies of the files a task attached, under its
// folder: a copy, because the script may change or remove the file after
// attaching it, and the coordinator fetches it later.
const artifactsDir = ".artifacts"

// Defaults of Config's artifact limits.
const (
	// DefaultMaxArtifactSize is the largest file a task may attach.
	DefaultMaxArtifactSize = 100 << 20
	// MaxArtifacts is the most files one task may attach.
	MaxArtifacts = 100
)

// ErrUnknownArtifact means a task has no artifact of that name.
var ErrUnknownArtifact = errors.New("unknown artifact")

// attach copies a file the task's script attached into the task's
// artifacts, and returns the log line that says what happened. The file
// must be a regular file inside the task's folder: a path that leaves it,
// by ".." or by a symbolic link, is refused, so a script cannot make the
// agent hand the coordinator a file of someone else's.
func (r *Runner) attach(t *task, path string) string {
	a, err := r.copyArtifact(t, path)
	if err != nil {
		return fmt.Sprintf("artifact %s not attached: %v", path, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	replaced := false
	t.artifacts = slices.DeleteFunc(t.artifacts, func(o protocol.Artifact) bool {
		replaced = replaced || o.Name == a.Name
		return o.Name == a.Name
	})
	t.artifacts = append(t.artifacts, a)
	line := fmt.Sprintf("artifact %s attached (%d bytes)", a.Name, a.Size)
	if replaced {
		line += ", replacing the earlier one of that name"
	}
	return line
}

func (r *Runner) copyArtifact(t *task, path string) (protocol.Artifact, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(t.dir, path)
	}
	rel, err := filepath.Rel(t.dir, filepath.Clean(path))
	if err != nil || !filepath.IsLocal(rel) {
		return protocol.Artifact{}, errors.New("it is outside the task's folder " + t.dir)
	}
	top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]
	if top == artifactsDir || top == partialDir {
		return protocol.Artifact{}, errors.New("it is in the agent's own part of the task's folder")
	}
	name := filepath.Base(rel)
	if err := ValidateFileName(name); err != nil {
		return protocol.Artifact{}, err
	}
	t.mu.Lock()
	n := len(t.artifacts)
	known := slices.ContainsFunc(t.artifacts, func(a protocol.Artifact) bool { return a.Name == name })
	t.mu.Unlock()
	if n >= MaxArtifacts && !known {
		return protocol.Artifact{}, fmt.Errorf("a task may attach at most %d files", MaxArtifacts)
	}
	// os.Root refuses a path that leaves the folder, through ".." or a
	// symbolic link anywhere along it.
	root, err := os.OpenRoot(t.dir)
	if err != nil {
		return protocol.Artifact{}, err
	}
	defer root.Close()
	src, err := root.Open(rel)
	if err != nil {
		return protocol.Artifact{}, fmt.Errorf("open: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return protocol.Artifact{}, err
	}
	if !st.Mode().IsRegular() {
		return protocol.Artifact{}, fmt.Errorf("it is not a regular file (%s)", st.Mode().Type())
	}
	limit := r.cfg.MaxArtifactSize
	if st.Size() > limit {
		return protocol.Artifact{}, fmt.Errorf("it is %d bytes, over the limit of %d", st.Size(), limit)
	}
	dir := filepath.Join(t.dir, artifactsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return protocol.Artifact{}, err
	}
	tmp, err := os.CreateTemp(dir, ".copy-*")
	if err != nil {
		return protocol.Artifact{}, err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	// The file may grow while it is copied: the limit holds for the copy.
	size, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(src, limit+1))
	if err == nil && size > limit {
		err = fmt.Errorf("it grew past the limit of %d bytes while it was copied", limit)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		return protocol.Artifact{}, fmt.Errorf("copy: %w", err)
	}
	return protocol.Artifact{Name: name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// OpenArtifact opens a task's artifact for the coordinator to fetch. The
// caller closes the file.
func (r *Runner) OpenArtifact(ticket, name string) (*os.File, protocol.Artifact, error) {
	if err := ValidateTicket(ticket); err != nil {
		return nil, protocol.Artifact{}, err
	}
	if err := ValidateFileName(name); err != nil {
		return nil, protocol.Artifact{}, err
	}
	var list []protocol.Artifact
	r.mu.Lock()
	t := r.tasks[ticket]
	r.mu.Unlock()
	if t != nil {
		t.mu.Lock()
		list = slices.Clone(t.artifacts)
		t.mu.Unlock()
	} else {
		res, err := readResult(r.taskDir(ticket))
		if err != nil {
			return nil, protocol.Artifact{}, fmt.Errorf("artifact %s of task %s: %w", name, ticket, ErrUnknownArtifact)
		}
		list = res.Artifacts
	}
	i := slices.IndexFunc(list, func(a protocol.Artifact) bool { return a.Name == name })
	if i < 0 {
		return nil, protocol.Artifact{}, fmt.Errorf("artifact %s of task %s: %w", name, ticket, ErrUnknownArtifact)
	}
	f, err := os.Open(filepath.Join(r.taskDir(ticket), artifactsDir, name))
	if err != nil {
		return nil, protocol.Artifact{}, fmt.Errorf("artifact %s of task %s: %w", name, ticket, err)
	}
	return f, list[i], nil
}
