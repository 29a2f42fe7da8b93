// Package identity is the coordinator's TLS identity in its data folder:
// the current certificate and, during a rotation, the previous one, which
// is still served to agents that have not yet learned the current one
// (they say so with the server-name hint). Announcing a rotation to the
// agents is the coordinator core's.
package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/tendrildeploy/tendril/certs"
	"github.com/tendrildeploy/tendril/protocol"
	"github.com/tendrildeploy/tendril/server/datadir"
)

// Set holds the coordinator's current certificate and, during a rotation,
// the previous one.
type Set struct {
	dir string

	mu       sync.RWMutex
	current  *certs.Identity
	previous *certs.Identity // nil when no rotation is in progress
	// rotating is held by a rotation, and shared by every announcement of
	// the list outside one (Announce), so that a list read before a
	// rotation cannot reach an agent after the rotation's own.
	rotating sync.RWMutex
}

// Load reads the identities kept in the data folder dir.
func Load(dir string) (*Set, error) {
	cur, err := datadir.LoadIdentity(dir)
	if err != nil {
		return nil, err
	}
	ids := &Set{dir: dir, current: cur}
	if _, err := os.Stat(filepath.Join(dir, datadir.PrevKeyFile)); err == nil {
		prev, err := certs.LoadIdentity(filepath.Join(dir, datadir.PrevCertFile), filepath.Join(dir, datadir.PrevKeyFile))
		if err != nil {
			return nil, fmt.Errorf("load previous coordinator certificate: %w", err)
		}
		ids.previous = prev
	}
	return ids, nil
}

// Certificate is the tls.Config.GetCertificate hook.
func (ids *Set) Certificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	if ids.previous != nil && protocol.HintMatches(h.ServerName, ids.previous.Thumbprint) {
		return &ids.previous.Certificate, nil
	}
	return &ids.current.Certificate, nil
}

// ForAgent picks the certificate to present to a listening agent the
// coordinator dials, which names no certificate of its own accord: the
// previous one while a rotation keeps it, for an agent whose last
// acknowledged thumbprint ack is that one, else the current one.
func (ids *Set) ForAgent(ack string) *tls.Certificate {
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	if ids.previous != nil && ack == ids.previous.Thumbprint {
		return &ids.previous.Certificate
	}
	return &ids.current.Certificate
}

// Thumbprints returns what agents should trust: current first.
func (ids *Set) Thumbprints() []string {
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	out := []string{ids.current.Thumbprint}
	if ids.previous != nil {
		out = append(out, ids.previous.Thumbprint)
	}
	return out
}

// Announce calls send with the thumbprints agents should trust, and keeps
// a rotation from starting until send returns: an agent told the list
// just before a rotation then hears the rotation's list after it, never
// the other way round.
func (ids *Set) Announce(send func(trust []string) error) error {
	ids.rotating.RLock()
	defer ids.rotating.RUnlock()
	return send(ids.Thumbprints())
}

// Current is the thumbprint of the certificate served now.
func (ids *Set) Current() string {
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	return ids.current.Thumbprint
}

// Rotate generates the next certificate, its key endorsed by signer so
// that agents that miss this rotation and the next still accept it (see
// certs.NewEndorsedIdentity), lets announce tell agents about it
// while the current one is still served, and then switches to it, keeping
// the old one as previous. The files are renamed one step at a time so a
// crash leaves a loadable folder (at worst, the rotation is undone and the
// announced certificate is never used).
func (ids *Set) Rotate(ctx context.Context, signer *certs.SigningKey, announce func(ctx context.Context, trust []string) error) (next, prev string, err error) {
	ids.rotating.Lock()
	defer ids.rotating.Unlock()
	nid, err := certs.NewEndorsedIdentity("tendril-server", signer)
	if err != nil {
		return "", "", err
	}
	p := func(name string) string { return filepath.Join(ids.dir, name) }
	if err := nid.Save(p(datadir.NextCertFile), p(datadir.NextKeyFile)); err != nil {
		return "", "", err
	}
	cur := ids.Current()
	if err := announce(ctx, []string{nid.Thumbprint, cur}); err != nil {
		os.Remove(p(datadir.NextCertFile))
		os.Remove(p(datadir.NextKeyFile))
		return "", "", err
	}
	for _, mv := range [][2]string{
		{datadir.CertFile, datadir.PrevCertFile}, {datadir.KeyFile, datadir.PrevKeyFile},
		{datadir.NextCertFile, datadir.CertFile}, {datadir.NextKeyFile, datadir.KeyFile},
	} {
		if err := os.Rename(p(mv[0]), p(mv[1])); err != nil {
			return "", "", fmt.Errorf("switch coordinator certificate: %w", err)
		}
	}
	ids.mu.Lock()
	ids.previous, ids.current = ids.current, nid
	ids.mu.Unlock()
	return nid.Thumbprint, cur, nil
}

// RetirePrevious stops serving the previous certificate once every agent
// trusts the current one.
func (ids *Set) RetirePrevious() error {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.previous == nil {
		return nil
	}
	var errs []error
	for _, f := range []string{datadir.PrevCertFile, datadir.PrevKeyFile} {
		if err := os.Remove(filepath.Join(ids.dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	ids.previous = nil
	return errors.Join(errs...)
}

// HasPrevious reports whether a rotation still serves the previous
// certificate.
func (ids *Set) HasPrevious() bool {
	ids.mu.RLock()
	defer ids.mu.RUnlock()
	return ids.previous != nil
}
