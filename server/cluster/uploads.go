// Package cluster is what several coordinator nodes sharing one database
// need of each other: Membership (registration, heartbeats, what a node
// knows of the others, the notifications they send each other) and
// Uploads (bundles, packages and files kept in each node's data folder
// and, for the others, in the database). What a node does about a
// notification is the coordinator core's.
package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/tendrildeploy/tendril/server/store"
)

// Uploads shares uploads (Calamari bundles, agent packages, task files)
// between the nodes of one database. A node alone on its database (the
// embedded SQLite store) keeps them in its data folder only.
type Uploads struct {
	st        UploadStore
	clustered bool
	log       *zap.Logger
}

// UploadStore is the part of the store that holds uploads.
type UploadStore interface {
	BlobInfo(ctx context.Context, key string) (store.Blob, error)
	PutBlob(ctx context.Context, b store.Blob, r io.Reader) error
	ReadBlob(ctx context.Context, key string, w io.Writer) (store.Blob, error)
}

// NewUploads returns the uploads of a node. clustered says whether other
// nodes share its database.
func NewUploads(st UploadStore, clustered bool, log *zap.Logger) *Uploads {
	return &Uploads{st: st, clustered: clustered, log: log}
}

// Keys of uploads in the database (store.Blob).

// CalamariBlob is the key of a Calamari bundle.
func CalamariBlob(version string) string { return "calamari/" + version }

// FileBlob is the key of a file uploaded for tasks.
func FileBlob(sum string) string { return "file/" + sum }

// CallBlobPrefix starts the keys of the files that calls between nodes
// carry (see CallBlob).
const CallBlobPrefix = "call/"

// CallBlob is the key of the file a call between nodes made (a
// diagnostics archive), from the node that made it to the node that
// asked; deleted once read.
func CallBlob(id string) string { return CallBlobPrefix + id }

// AgentPackageBlob is the key of an agent package.
func AgentPackageBlob(version, goos, goarch string) string {
	return "agent-package/" + version + "/" + goos + "/" + goarch
}

// Share stores an upload received in this node's data folder in
// the database too, for the other nodes to fetch when they need it.
func (u *Uploads) Share(ctx context.Context, key, path, sum string, size int64) error {
	if !u.clustered {
		return nil
	}
	if _, err := u.st.BlobInfo(ctx, key); err == nil || !errors.Is(err, store.ErrNotFound) {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return u.st.PutBlob(ctx, store.Blob{Key: key, SHA256: sum, Size: size, StoredAt: time.Now().UTC()}, f)
}

// Fetch makes sure an upload is in this node's data folder at path,
// fetching it from the database if another node received it. Its SHA-256
// is checked against sum before it is put in place.
func (u *Uploads) Fetch(ctx context.Context, key, path, sum string) error {
	_, err := os.Stat(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !u.clustered {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fetch-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	defer tmp.Close()
	h := sha256.New()
	b, err := u.st.ReadBlob(ctx, key, io.MultiWriter(tmp, h))
	if err != nil {
		return fmt.Errorf("fetch %s from the database: %w", key, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("fetch %s from the database: its SHA-256 is %s, want %s", key, got, sum)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	u.log.Info("upload fetched from the database", zap.String("key", key), zap.Int64("size", b.Size))
	return nil
}

// Have reports whether an upload is in this node's data folder or,
// for nodes sharing a database, in the database.
func (u *Uploads) Have(ctx context.Context, key, path string) bool {
	if _, err := os.Stat(path); err == nil {
		return true
	}
	if !u.clustered {
		return false
	}
	_, err := u.st.BlobInfo(ctx, key)
	return err == nil
}

// KeepCopy puts an upload that is stored already (through another node)
// into this node's data folder if it lacks it: uploaded files live in each
// node's folder, so an upload repeated on every node gives each its copy.
func KeepCopy(tmp *os.File, dest string) error {
	if _, err := os.Stat(dest); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dest)
}
