package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// ErrNodeAlive means a node with the name asked for is still alive.
var ErrNodeAlive = errors.New("a live node already has this name")

// DeadAfter is how many heartbeat intervals a node may miss before the
// others count it dead: a node is judged by the interval it announced, so
// nodes configured differently still agree.
const DeadAfter = 3

// Node is one run of a coordinator process sharing the database. A
// restarted coordinator is a new Node with the same Name.
type Node struct {
	ID        string // chosen when the process starts
	Name      string // the operator's name for it, kept across restarts
	Advertise string // host:port agents dial
	HTTP      string // host:port of its API
	Version   string
	StartedAt time.Time
	// HeartbeatEvery is how often the node promised to beat.
	HeartbeatEvery time.Duration
	// Heartbeat is its last beat and HeartbeatAge how long ago that was
	// when the row was read, both by the database's clock (SQLite: this
	// host's), so that clocks that disagree between hosts do not matter.
	Heartbeat    time.Time
	HeartbeatAge time.Duration
	StoppedAt    time.Time // zero unless the node stopped cleanly
	// Draining nodes accept no agent sessions and claim no new tasks; the
	// flag passes to the next run of a node with the same name.
	Draining bool

	// Agents, Tasks and Rollouts count, as the store has them, the agents
	// whose session the node recorded, and the unfinished tasks and
	// running rollouts it drives. Only filled by Nodes.
	Agents   int
	Tasks    int
	Rollouts int
}

// Alive reports whether the node is running: not stopped, and its last
// heartbeat is recent enough.
func (n Node) Alive() bool {
	return n.StoppedAt.IsZero() && n.HeartbeatAge <= DeadAfter*n.HeartbeatEvery
}

// ClusterStore is the part of Store about coordinator nodes: their
// registry, which node serves which agent and drives which task or
// rollout, and the wake-up calls between them.
//
// Work moves between nodes by compare-and-set claims: a claim names the
// node the caller saw (from) and succeeds only if that is still the
// owner, so of several nodes racing for the same task exactly one wins.
type ClusterStore interface {
	// RegisterNode records a node that starts. Earlier rows with the same
	// name that are no longer alive are removed and the newest one's
	// Draining passes to n; a live one refuses n with ErrNodeAlive. The
	// heartbeat is set now; StartedAt must be set. It returns n as stored.
	RegisterNode(ctx context.Context, n Node) (Node, error)
	// HeartbeatNode records that the node is alive. ErrNotFound if its
	// row is gone or it was stopped.
	HeartbeatNode(ctx context.Context, id string) error
	// StopNode records a clean stop: the node counts as dead at once, and
	// it no longer serves any agent.
	StopNode(ctx context.Context, id string, at time.Time) error
	// Nodes returns every node, by name then start, with its counts.
	Nodes(ctx context.Context) ([]Node, error)
	// SetNodeDraining sets a node's draining flag. ErrNotFound if there is
	// no such node.
	SetNodeDraining(ctx context.Context, id string, draining bool) error
	// PruneNodes removes nodes whose last heartbeat is older than age,
	// and returns how many.
	PruneNodes(ctx context.Context, age time.Duration) (int, error)

	// DisconnectAgent records that the agent's session on node ended:
	// LastSeen is set, and the agent's node cleared if it is still node
	// (the agent may have connected elsewhere meanwhile). Unknown agents
	// are skipped.
	DisconnectAgent(ctx context.Context, id, node string, at time.Time) error

	// ClaimTask makes node `to` the task's driver if its driver is still
	// `from` ("" for none) and it is unfinished; to == "" releases it. It
	// reports whether it did.
	ClaimTask(ctx context.Context, id, from, to string) (bool, error)
	// ClaimRollout does the same for a running rollout's batches.
	ClaimRollout(ctx context.Context, id, from, to string) (bool, error)
	// SetRolloutAgentNode moves an agent of a rollout to state `to`, and
	// its node from `fromNode` to `toNode`, only if its state is one of
	// from and its node is fromNode. It reports whether it did.
	SetRolloutAgentNode(ctx context.Context, rolloutID, agentID string, from []string, fromNode, to, toNode, reason string, at time.Time) (bool, error)

	// PutBlob stores what r yields under b.Key, unless a blob is stored
	// there already; r must yield b.Size bytes whose SHA-256 is b.SHA256,
	// or nothing is stored.
	PutBlob(ctx context.Context, b Blob, r io.Reader) error
	// BlobInfo describes a stored blob. ErrNotFound if there is none.
	BlobInfo(ctx context.Context, key string) (Blob, error)
	// ReadBlob writes a stored blob's content to w. ErrNotFound if there
	// is none.
	ReadBlob(ctx context.Context, key string, w io.Writer) (Blob, error)

	// Notify sends payload to every node's Listen, this one's included.
	// Delivery is not guaranteed (a listener may be reconnecting), so a
	// notification only hastens what a node would find out in time.
	Notify(ctx context.Context, payload string) error
	// Listen calls fn with each notification until ctx ends, and with ""
	// whenever notifications may have been missed (after connecting or
	// reconnecting). fn must not block. When the connection it listens on
	// fails, it calls lost (if not nil) with why and the wait before it
	// tries again. It returns when ctx ends.
	Listen(ctx context.Context, fn func(payload string), lost func(err error, wait time.Duration)) error
}

// Blob is an upload kept in the database for the nodes sharing it: a
// Calamari bundle, an agent package or a task file, which each node keeps
// in its data folder once it has it.
type Blob struct {
	Key      string // e.g. "calamari/1.2.3"
	SHA256   string // lower-case hex
	Size     int64
	StoredAt time.Time
}

// checkedReader reads exactly the blob's size from r and fails at the end
// unless its SHA-256 is the blob's, so a store never keeps a blob that is
// not what it claims to be.
type checkedReader struct {
	r io.Reader
	b Blob
	h hash.Hash
	n int64
}

func newCheckedReader(r io.Reader, b Blob) *checkedReader {
	return &checkedReader{r: io.LimitReader(r, b.Size+1), b: b, h: sha256.New()}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if c.n > c.b.Size {
		return n, fmt.Errorf("blob %s: more than %d bytes", c.b.Key, c.b.Size)
	}
	if err == io.EOF {
		if c.n != c.b.Size {
			return n, fmt.Errorf("blob %s: got %d bytes, want %d", c.b.Key, c.n, c.b.Size)
		}
		if sum := hex.EncodeToString(c.h.Sum(nil)); sum != c.b.SHA256 {
			return n, fmt.Errorf("blob %s: SHA-256 is %s, want %s", c.b.Key, sum, c.b.SHA256)
		}
	}
	return n, err
}
