package task

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/tendrildeploy/tendril/protocol"
)

// FilePush is one file on its way into a task's files/ folder. It holds
// the push's locks until Close.
type FilePush struct {
	partial, final string
	transfer       protocol.Transfer
	unlock         []func()
	// Offset is where the sender resumes: the bytes of an earlier, cut
	// push of the same file already on disk.
	Offset int64
	// Done means the task already has this file: no bytes follow.
	Done bool
}

var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// BeginFilePush validates a file push and waits (bounded by ctx) until no
// other push of the same file runs. The caller answers the sender with the
// returned push's Offset and Done, calls Receive unless Done, and always
// calls Close.
//
// Partial bytes are kept under the task's .partial folder named by the
// file's SHA-256, so that the bytes of one file never resume another.
func (r *Runner) BeginFilePush(ctx context.Context, req protocol.FilePush) (*FilePush, error) {
	if err := ValidateTicket(req.Ticket); err != nil {
		return nil, err
	}
	if err := ValidateFileName(req.Name); err != nil {
		return nil, err
	}
	if !hashRE.MatchString(req.File.SHA256) || req.File.Size < 0 {
		return nil, fmt.Errorf("%w: want a size of at least 0 and a lower-case hex SHA-256, got %d and %q", ErrInvalidTransfer, req.File.Size, req.File.SHA256)
	}
	dir := r.taskDir(req.Ticket)
	p := &FilePush{
		partial:  filepath.Join(dir, partialDir, req.File.SHA256+".part"),
		final:    filepath.Join(dir, filesDir, req.Name),
		transfer: req.File,
	}
	// Name first, then content, always in that order.
	for _, key := range []string{req.Ticket + "/name/" + req.Name, req.Ticket + "/sha256/" + req.File.SHA256} {
		unlock, err := r.files.Lock(ctx, key)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("push file %s to task %s: %w", req.Name, req.Ticket, err)
		}
		p.unlock = append(p.unlock, unlock)
	}
	if sum, err := fileSHA256(p.final); err == nil && sum == req.File.SHA256 {
		p.Done = true
		return p, nil
	}
	// A running or finished task's files are what it ran with; changing
	// them afterwards would make its log lie.
	if exists(filepath.Join(dir, infoFile)) {
		p.Close()
		return nil, fmt.Errorf("push file %s to task %s: %w; its files cannot change", req.Name, req.Ticket, ErrStarted)
	}
	for _, d := range []string{filepath.Join(dir, filesDir), filepath.Join(dir, partialDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			p.Close()
			return nil, fmt.Errorf("push file %s to task %s: %w", req.Name, req.Ticket, err)
		}
	}
	p.Offset = protocol.PartialSize(p.partial)
	if p.Offset > req.File.Size {
		os.Remove(p.partial)
		p.Offset = 0
	}
	return p, nil
}

// Receive reads the rest of the file from r and puts it in place. When r
// fails (a broken connection) the bytes that arrived are kept for the next
// push to resume.
func (p *FilePush) Receive(r io.Reader) error {
	if p.Done {
		return nil
	}
	if err := protocol.ReceiveBulk(r, p.partial, p.transfer); err != nil {
		return fmt.Errorf("receive file %s: %w", filepath.Base(p.final), err)
	}
	if err := os.Rename(p.partial, p.final); err != nil {
		return fmt.Errorf("receive file %s: %w", filepath.Base(p.final), err)
	}
	if d, err := os.Open(filepath.Dir(p.final)); err == nil {
		d.Sync() // make the rename durable; best effort where folders cannot be synced
		d.Close()
	}
	return nil
}

// Close releases the push's locks. It is idempotent.
func (p *FilePush) Close() {
	for i := len(p.unlock) - 1; i >= 0; i-- {
		p.unlock[i]()
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
