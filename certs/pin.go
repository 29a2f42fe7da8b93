package certs

import (
	"crypto/tls"
	"fmt"
	"sync"
)

// Pins is a concurrency-safe set of trusted thumbprints. During a rotation
// it holds both the old and the new thumbprint of a peer.
type Pins struct {
	mu sync.RWMutex
	m  map[string]struct{}
}

// NewPins returns a set holding the given thumbprints.
func NewPins(thumbprints ...string) *Pins {
	p := &Pins{m: make(map[string]struct{}, len(thumbprints))}
	for _, t := range thumbprints {
		p.m[t] = struct{}{}
	}
	return p
}

// Contains reports whether t is trusted.
func (p *Pins) Contains(t string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.m[t]
	return ok
}

// Set replaces the trusted set.
func (p *Pins) Set(thumbprints ...string) {
	m := make(map[string]struct{}, len(thumbprints))
	for _, t := range thumbprints {
		m[t] = struct{}{}
	}
	p.mu.Lock()
	p.m = m
	p.mu.Unlock()
}

// List returns the trusted thumbprints in no particular order.
func (p *Pins) List() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]string, 0, len(p.m))
	for t := range p.m {
		out = append(out, t)
	}
	return out
}

// PeerThumbprint returns the thumbprint of the leaf certificate of a
// completed handshake, or ErrNoCertificate.
func PeerThumbprint(cs tls.ConnectionState) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", ErrNoCertificate
	}
	return Thumbprint(cs.PeerCertificates[0].Raw), nil
}

// VerifyPinned returns a tls.Config.VerifyConnection function that accepts
// the peer only if its leaf certificate's thumbprint is in pins. It is the
// whole of certificate verification for self-signed peers: callers set
// InsecureSkipVerify only together with this check, which also runs on
// resumed sessions.
func VerifyPinned(pins *Pins) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		t, err := PeerThumbprint(cs)
		if err != nil {
			return err
		}
		if !pins.Contains(t) {
			return fmt.Errorf("%w: thumbprint %s is not the one configured", ErrUntrusted, t)
		}
		return nil
	}
}
