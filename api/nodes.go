package api

import "time"

// NodeView is a coordinator node as GET /api/nodes shows it.
type NodeView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Advertise string    `json:"advertise"` // the address agents dial
	HTTP      string    `json:"http"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	Heartbeat time.Time `json:"heartbeat_at"`
	// HeartbeatAgeSeconds is how long ago the last heartbeat was, by the
	// database's clock.
	HeartbeatAgeSeconds float64 `json:"heartbeat_age_seconds"`
	State               string  `json:"state"`
	Alive               bool    `json:"alive"`
	Draining            bool    `json:"draining"`
	// Drained is true once a draining node holds no agent and drives no
	// task or rollout.
	Drained bool `json:"drained"`
	// Agents connected to the node, and the unfinished tasks and running
	// rollouts it drives; zero for a node that is not alive.
	Agents   int `json:"agents"`
	Tasks    int `json:"tasks"`
	Rollouts int `json:"rollouts"`
	// Self is true for the node that answered.
	Self bool `json:"self"`
}

// Node states, as the API shows them.
const (
	NodeRunning  = "running"  // serving agents and taking tasks
	NodeDraining = "draining" // finishing its work; agents move away
	NodeDrained  = "drained"  // draining, and nothing is left: it can be stopped
	NodeStopped  = "stopped"  // stopped cleanly
	NodeDead     = "dead"     // missed its heartbeats
	// NodeLate is, in an agent's node_state only, a node still counted
	// alive that has missed a heartbeat: it may be gone, and its agents
	// with it.
	NodeLate = "late"
)
