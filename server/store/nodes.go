package store

import "time"

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
	// Dials says the node dials listening agents; nodes of versions from
	// before them do not, and must not be picked to.
	Dials bool
	// Answers says the node takes the calls other nodes address to it
	// for its agents (NodeCall); nodes of versions from before them do
	// not.
	Answers bool

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

// Late reports whether a live node has missed a heartbeat: it may be
// gone, and the others count it dead if it misses DeadAfter.
func (n Node) Late() bool {
	return n.Alive() && n.HeartbeatAge > 2*n.HeartbeatEvery
}

// NodeCall is a per-agent action one node asks of the node holding the
// agent's session, which alone can do it, and that node's answer.
type NodeCall struct {
	ID string
	// Node is the node asked, From the node asking.
	Node, From string
	AgentID    string
	// Action names what to do; Args is its JSON input.
	Action string
	Args   []byte
	// CreatedAt is set by the asking node, AcceptedAt when the node asked
	// takes the call (zero until then), AnsweredAt when it answered.
	CreatedAt, AcceptedAt, AnsweredAt time.Time
	// The answer: Result, a JSON document, or Error, a message for a
	// person, and ErrorKind, a word the asking node maps back to the kind
	// of failure it stands for.
	Result    []byte
	ErrorKind string
	Error     string
}

// Answered reports whether the node asked has answered.
func (c NodeCall) Answered() bool { return !c.AnsweredAt.IsZero() }

// Blob is an upload kept in the database for the nodes sharing it: a
// Calamari bundle, an agent package or a task file, which each node keeps
// in its data folder once it has it.
type Blob struct {
	Key      string // e.g. "calamari/1.2.3"
	SHA256   string // lower-case hex
	Size     int64
	StoredAt time.Time
}
