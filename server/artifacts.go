package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/httpapi"
	"github.com/tendrildeploy/tendril/server/kind"
	"github.com/tendrildeploy/tendril/server/store"
)

// MaxArtifactSize is the largest artifact a coordinator takes from an
// agent, whatever the agent's own limit.
const MaxArtifactSize = 1 << 30

// errArtifactRefused marks an artifact that fetching again cannot bring:
// the agent no longer has it, or what it offers is not what it reported.
var errArtifactRefused = errors.New("artifact cannot be collected")

// collectArtifacts fetches the artifacts a finished task attached, into
// this node's files and the cluster's uploads, and returns the ones that
// arrived. An artifact that cannot be had is said in the task's log and
// left out; an error means the session failed, and the caller collects
// again (resuming the cut artifact) on the agent's next one.
func (s *Server) collectArtifacts(ctx context.Context, as *agentSession, t store.Task, arts []protocol.Artifact) ([]store.TaskArtifact, error) {
	var out []store.TaskArtifact
	for _, a := range arts {
		if slices.ContainsFunc(t.Artifacts, func(o store.TaskArtifact) bool { return o.Name == a.Name && o.SHA256 == a.SHA256 }) {
			out = append(out, store.TaskArtifact{Name: a.Name, Size: a.Size, SHA256: a.SHA256})
			continue
		}
		resumed, err := s.fetchArtifact(ctx, as.sess, t.ID, a)
		if resumed > 0 && errors.Is(err, protocol.ErrTransfer) {
			// The bytes kept from a cut fetch were not the artifact's
			// (ReceiveBulk removed them): once more, from the start.
			resumed, err = s.fetchArtifact(ctx, as.sess, t.ID, a)
		}
		if err != nil && !errors.Is(err, errArtifactRefused) && (as.sess.IsClosed() || ctx.Err() != nil) {
			// The session ended: the agent's next one resumes it.
			return nil, fmt.Errorf("collect artifact %s of task %s: %w", a.Name, t.ID, err)
		}
		if err != nil && (kind.IsNoSpace(err) || errors.Is(err, store.ErrUnavailable)) {
			// This node's storage, not the artifact: the task is held
			// (its reason says why) and its collection tried again until
			// the data folder or the database takes it. The agent keeps
			// the file meanwhile.
			return nil, storeFailed(fmt.Sprintf("store artifact %s", a.Name), err)
		}
		if err != nil {
			// Fetching again from a live session would fail the same way
			// (a file the agent lost, one it refuses): the task ends
			// without it, and its log says why.
			s.taskLog(t.ID, fmt.Sprintf("Artifact %s could not be collected: %v", a.Name, err))
			continue
		}
		line := fmt.Sprintf("Collected artifact %s (%d bytes)", a.Name, a.Size)
		if resumed > 0 {
			line = fmt.Sprintf("Collected artifact %s (%d bytes, resuming a cut transfer after %d)", a.Name, a.Size, resumed)
		}
		s.taskLog(t.ID, line)
		out = append(out, store.TaskArtifact{Name: a.Name, Size: a.Size, SHA256: a.SHA256})
	}
	return out, nil
}

// fetchArtifact brings one artifact into this node's files (named by its
// SHA-256, as uploaded files are) and shares it with the cluster. A cut
// transfer resumes from the bytes that arrived; resumed says after how
// many. A transfer whose bytes do not match wraps protocol.ErrTransfer.
func (s *Server) fetchArtifact(ctx context.Context, sess *yamux.Session, ticket string, a protocol.Artifact) (resumed int64, err error) {
	if a.Size < 0 || a.Size > MaxArtifactSize || !sha256Pattern.MatchString(a.SHA256) || !plainName(a.Name) {
		return 0, fmt.Errorf("%w: the agent reported %q of %d bytes with SHA-256 %q (at most %d bytes)", errArtifactRefused, a.Name, a.Size, a.SHA256, MaxArtifactSize)
	}
	path := filepath.Join(s.filesDir(), a.SHA256)
	key := cluster.FileBlob(a.SHA256)
	if s.uploads.Have(ctx, key, path) {
		return 0, nil
	}
	if err := os.MkdirAll(s.filesDir(), 0o700); err != nil {
		return 0, err
	}
	// One partial file per task: tasks on several agents often attach
	// the same bytes, and fetch them at once.
	partial := path + "." + ticket + ".artifact"
	st, err := sess.OpenStream()
	if err != nil {
		return 0, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Now()) })
	defer stop()
	st.SetDeadline(time.Now().Add(protocol.RequestTimeout))
	req := protocol.ArtifactFetch{Ticket: ticket, Name: a.Name, Offset: protocol.PartialSize(partial)}
	if req.Offset > a.Size {
		os.Remove(partial)
		req.Offset = 0
	}
	if err := protocol.WriteFrame(st, protocol.TypeArtifactFetch, req); err != nil {
		return 0, err
	}
	f, err := protocol.ReadFrame(st, 0)
	if err != nil {
		return 0, err
	}
	var data protocol.ArtifactData
	if err := protocol.DecodeReply(f, protocol.TypeArtifactData, &data); err != nil {
		if protocol.IsCode(err, protocol.CodeBadRequest) {
			return 0, fmt.Errorf("%w: %v", errArtifactRefused, err)
		}
		return 0, err
	}
	if data.File.Size != a.Size || data.File.SHA256 != a.SHA256 {
		return 0, fmt.Errorf("%w: the agent offers %d bytes with SHA-256 %s, its task reported %d bytes with %s", errArtifactRefused, data.File.Size, data.File.SHA256, a.Size, a.SHA256)
	}
	if err := protocol.ReceiveBulk(idleReader{ctx, st}, partial, data.File); err != nil {
		if errors.Is(err, protocol.ErrTransfer) {
			return req.Offset, fmt.Errorf("%w: %w", errArtifactRefused, err)
		}
		return req.Offset, err
	}
	if err := os.Rename(partial, path); err != nil {
		return req.Offset, err
	}
	if err := s.uploads.Share(ctx, key, path, a.SHA256, a.Size); err != nil && !errors.Is(err, store.ErrExists) {
		return req.Offset, err
	}
	return req.Offset, nil
}

// plainName accepts an artifact's name as the agent checked it: a
// plain name, no path.
func plainName(name string) bool {
	return name != "" && len(name) <= 255 && filepath.IsLocal(name) && filepath.Base(name) == name && name[0] != '.'
}

// TaskArtifact is a task's artifact as a download.
func (s *Server) TaskArtifact(ctx context.Context, taskID, name string) (httpapi.Download, error) {
	t, err := s.store.Task(ctx, taskID)
	if err != nil {
		return httpapi.Download{}, err
	}
	i := slices.IndexFunc(t.Artifacts, func(a store.TaskArtifact) bool { return a.Name == name })
	if i < 0 {
		return httpapi.Download{}, kind.Errorf(store.ErrNotFound, "task %s has no artifact %q", taskID, name)
	}
	a := t.Artifacts[i]
	path := filepath.Join(s.filesDir(), a.SHA256)
	if err := s.uploads.Fetch(ctx, cluster.FileBlob(a.SHA256), path, a.SHA256); err != nil {
		return httpapi.Download{}, kind.Errorf(store.ErrNotFound, "artifact %s of task %s is no longer stored on this coordinator: %v", name, taskID, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return httpapi.Download{}, err
	}
	return httpapi.Download{Name: a.Name, Size: a.Size, Body: f}, nil
}
