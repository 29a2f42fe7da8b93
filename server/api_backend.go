package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tendrildeploy/tendril/api"
	"github.com/tendrildeploy/tendril/diag"
	"github.com/tendrildeploy/tendril/server/backup"
	"github.com/tendrildeploy/tendril/server/cluster"
	"github.com/tendrildeploy/tendril/server/datadir"
	"github.com/tendrildeploy/tendril/server/kind"
)

// TakeSnapshot writes a consistent copy of the database into the data
// folder, for a backup command to pack and then delete.
func (s *Server) TakeSnapshot(ctx context.Context) (api.Snapshot, error) {
	sn, ok := unwrapStore(s.store).(backup.Snapshotter)
	if !ok {
		return api.Snapshot{}, kind.Errorf(kind.ErrConflict, "this coordinator's database cannot be backed up by Tendril; use the database's own backup tools")
	}
	snap, err := backup.TakeSnapshot(ctx, sn, s.cfg.DataDir, s.cfg.Version)
	if kind.IsNoSpace(err) {
		// The snapshot is a compacted copy of the database: at most
		// its file and its write-ahead log.
		var size int64
		for _, name := range []string{datadir.DBFile, datadir.DBFile + "-wal"} {
			if fi, serr := os.Stat(filepath.Join(s.cfg.DataDir, name)); serr == nil {
				size += fi.Size()
			}
		}
		return api.Snapshot{}, &kind.NoSpaceError{Free: -1, Needed: size, Err: err}
	}
	return snap, err
}

// dataFree is the bytes free in the data folder, -1 if unknown.
func (s *Server) dataFree() int64 {
	n, err := diag.DiskFree(s.cfg.DataDir)
	if err != nil {
		return -1
	}
	return n
}

// Updates returns what the release feed says about newer versions.
func (s *Server) Updates() api.UpdatesView { return s.releases.Updates() }

// StoreFile stores a file by its SHA-256, for tasks to send to agents,
// and shares it with the other nodes, for when they drive a task that
// needs it.
func (s *Server) StoreFile(ctx context.Context, r io.Reader) (api.FileView, error) {
	v, err := s.storeFile(r)
	if err != nil {
		return api.FileView{}, err
	}
	if err := s.uploads.Share(ctx, cluster.FileBlob(v.SHA256), filepath.Join(s.filesDir(), v.SHA256), v.SHA256, v.Size); err != nil {
		return api.FileView{}, err
	}
	return v, nil
}

func (s *Server) storeFile(r io.Reader) (api.FileView, error) {
	if err := os.MkdirAll(s.filesDir(), 0o700); err != nil {
		return api.FileView{}, err
	}
	tmp, err := os.CreateTemp(s.filesDir(), ".upload-*")
	if err != nil {
		return api.FileView{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), r)
	if err != nil {
		return api.FileView{}, fmt.Errorf("receive file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return api.FileView{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(s.filesDir(), sum)); err != nil {
		return api.FileView{}, err
	}
	return api.FileView{SHA256: sum, Size: n}, nil
}
