package agent

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tendrildeploy/tendril/atomicfile"

	"github.com/tendrildeploy/tendril/certs"
)

// Names inside the home folder. The home folder is the agent's whole
// state: copying it moves the agent, deleting it forgets the agent.
const (
	stateFile   = "agent.json"
	certsDir    = "certs"
	calamariDir = "Calamari"
	workDir     = "Work"
	logsDir     = "Logs"
	// lockFile is locked by the running agent (see lockHome).
	lockFile = "agent.lock"

	// Certificate slots in certsDir: the identity in use, a pending
	// rotation, and the identity a rotation replaced.
	currentSlot  = "agent"
	nextSlot     = "next"
	previousSlot = "previous"
)

// ErrNotRegistered means the home folder holds no registration.
var ErrNotRegistered = errors.New("not registered")

// State is the agent's registration, stored as <home>/agent.json.
type State struct {
	// AgentID is the coordinator's identifier for this agent.
	AgentID string `json:"agent_id"`
	// Name is the agent's name on the coordinator.
	Name string `json:"name"`
	// Environment is the environment the agent was enrolled into.
	Environment string `json:"environment"`
	// Servers is every coordinator node address, tried in turn: host:port,
	// or a ws:// or wss:// URL for a coordinator reached as a WebSocket.
	Servers []string `json:"servers"`
	// LearnedServers are coordinator node addresses the coordinator
	// announced (Welcome.Servers) beyond Servers, tried after them.
	LearnedServers []string `json:"learned_servers,omitempty"`
	// ServerThumbprints is every coordinator thumbprint trusted; more than
	// one while the coordinator rotates its certificate.
	ServerThumbprints []string `json:"server_thumbprints"`
	// ServerHint is the coordinator thumbprint the agent asks for, so a
	// coordinator in the middle of a rotation serves one the agent trusts.
	ServerHint string `json:"server_hint"`
	// SigningKey is the coordinator's hex Ed25519 public key that
	// Calamari bundles and agent packages are verified against.
	SigningKey string `json:"signing_key"`
	// RegisteredAt is when the registration was made.
	RegisteredAt time.Time `json:"registered_at"`
	// Proxy is the HTTP proxy the agent dials through, as given to
	// register --proxy: a URL (its credentials are why this file is
	// 0600), "none", or "" for the environment's (HTTPS_PROXY, NO_PROXY).
	Proxy string `json:"proxy,omitempty"`
	// Listen is the address a listening agent binds, host:port (":10933"
	// for every interface): the coordinator dials it, and the agent never
	// dials out. "" for an agent that dials the coordinator. A listening
	// agent has no Servers, and learns AgentID, Name, Environment and
	// SigningKey at its first Welcome.
	Listen string `json:"listen,omitempty"`
	// SignedRequests is set once the agent accepted a request signed by
	// the coordinator's signing key, or registered with a coordinator that
	// signs: from then on it refuses the requests that make it act
	// (protocol.SignedTypes) unsigned, so that a copy of the coordinator's
	// TLS key alone cannot drive it. Never cleared but by registering
	// again.
	SignedRequests bool `json:"signed_requests,omitempty"`
}

// notRegistered names the command that fixes the problem, because the
// person reading it is usually setting the machine up.
func notRegistered(home string) error {
	return fmt.Errorf("%w: run \"tendril-agent register --home %s --join ...\" first", ErrNotRegistered, home)
}

// LoadState reads the registration in home. It returns an error wrapping
// ErrNotRegistered when there is none.
func LoadState(home string) (State, error) {
	path := filepath.Join(home, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, notRegistered(home)
	}
	if err != nil {
		return State{}, fmt.Errorf("read agent state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("read agent state %s: %w; register again with --force", path, err)
	}
	if len(s.Servers) == 0 && s.Listen == "" || len(s.ServerThumbprints) == 0 {
		return State{}, fmt.Errorf("read agent state %s: no coordinator address or thumbprint; register again with --force", path)
	}
	if s.ServerHint == "" {
		s.ServerHint = s.ServerThumbprints[0]
	}
	return s, nil
}

// saveState writes the registration atomically, readable only by the
// agent's user: it names the coordinator the agent trusts.
func saveState(home string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode agent state: %w", err)
	}
	return atomicfile.Write(filepath.Join(home, stateFile), append(b, '\n'), 0o600)
}

// makeHome creates the home folder layout, the home itself 0700. Work and
// Logs may hold deployment secrets, so only Calamari (tools run by
// deployments) is readable by others. An existing home that another user
// could change is refused (see ErrUnsafeHome) before anything is made in
// it: the agent would refuse to start on it anyway.
func makeHome(home string) error {
	if err := checkTrust(home, ""); err != nil {
		return err
	}
	dirs := []struct {
		path string
		mode fs.FileMode
	}{
		{home, 0o700},
		{filepath.Join(home, certsDir), 0o700},
		{filepath.Join(home, calamariDir), 0o755},
		{filepath.Join(home, workDir), 0o700},
		{filepath.Join(home, logsDir), 0o700},
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("create home folder: %w", err)
		}
	}
	return nil
}

// slot is the pair of files holding one identity.
type slot struct{ cert, key string }

func certSlot(home, name string) slot {
	dir := filepath.Join(home, certsDir)
	return slot{cert: filepath.Join(dir, name+".crt"), key: filepath.Join(dir, name+".key")}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (s slot) complete() bool { return exists(s.cert) && exists(s.key) }

func (s slot) load() (*certs.Identity, error) { return certs.LoadIdentity(s.cert, s.key) }

// loadIdentity loads the agent's identity, first finishing a promotion
// that a crash interrupted.
func loadIdentity(home string) (*certs.Identity, error) {
	cur := certSlot(home, currentSlot)
	if !cur.complete() && (exists(certSlot(home, nextSlot).cert) || exists(certSlot(home, nextSlot).key)) {
		if err := promote(home); err != nil {
			return nil, err
		}
	}
	id, err := cur.load()
	if err != nil {
		return nil, fmt.Errorf("load agent identity: %w", err)
	}
	return id, nil
}

// promote makes the pending identity the current one and keeps the current
// one as previous. Each step is one rename, in an order that lets a crash
// anywhere be finished by calling promote again: the key moves before the
// certificate, and a step runs only while its source is still there.
func promote(home string) error {
	cur, next, prev := certSlot(home, currentSlot), certSlot(home, nextSlot), certSlot(home, previousSlot)
	var steps [][2]string
	if exists(next.key) {
		if exists(cur.cert) {
			steps = append(steps, [2]string{cur.cert, prev.cert})
		}
		if exists(cur.key) {
			steps = append(steps, [2]string{cur.key, prev.key})
		}
		steps = append(steps, [2]string{next.key, cur.key})
	}
	if exists(next.cert) {
		steps = append(steps, [2]string{next.cert, cur.cert})
	}
	for _, s := range steps {
		if err := os.Rename(s[0], s[1]); err != nil {
			return fmt.Errorf("promote new certificate: %w", err)
		}
	}
	if d, err := os.Open(filepath.Join(home, certsDir)); err == nil {
		d.Sync() // make the renames durable; best effort where folders cannot be synced
		d.Close()
	}
	return nil
}

// Thumbprint returns the thumbprint of the agent's current certificate.
func Thumbprint(home string) (string, error) {
	path := certSlot(home, currentSlot).cert
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := LoadState(home); serr != nil {
			return "", serr
		}
	}
	if err != nil {
		return "", fmt.Errorf("read agent certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("read agent certificate %s: no PEM CERTIFICATE block", path)
	}
	return certs.Thumbprint(block.Bytes), nil
}

// RotateCertificate creates the agent's next certificate and key in the
// pending slot and returns the new thumbprint. A running agent presents it
// to the coordinator at its next rotation check and then switches to it.
// If a rotation is already pending, its thumbprint is returned instead of
// creating another, so a repeated command cannot race the running agent.
func RotateCertificate(home string) (string, error) {
	st, err := LoadState(home)
	if err != nil {
		return "", err
	}
	next := certSlot(home, nextSlot)
	// A pending certificate without its key is a promotion a crash
	// interrupted (the agent finishes it on start); a key without its
	// certificate is an earlier run of this command that was interrupted,
	// and is overwritten below.
	if exists(next.cert) {
		id, err := next.load()
		if err != nil {
			return "", fmt.Errorf("rotate certificate: a previous rotation is incomplete (%v); start the agent to finish it", err)
		}
		return id.Thumbprint, nil
	}
	id, err := certs.NewIdentity(st.Name)
	if err != nil {
		return "", fmt.Errorf("rotate certificate: %w", err)
	}
	// Save writes the key before the certificate, and the running agent
	// looks for the certificate, so it never finds half a pair.
	if err := id.Save(next.cert, next.key); err != nil {
		return "", fmt.Errorf("rotate certificate: %w", err)
	}
	return id.Thumbprint, nil
}
