-- Coordinator nodes, for high availability: several coordinators share one
-- database (PostgreSQL), and each serves the agents connected to it.
--
-- A row is one run of a coordinator process: id is chosen at start, name
-- is the operator's (--node-name) and outlives restarts, which carry the
-- draining flag over to the new row. heartbeat_at is written by the
-- database's clock where it has one, so that nodes on hosts whose clocks
-- disagree still judge each other alive or dead alike; a node is dead once
-- it missed three heartbeats (heartbeat_every), or once it stopped.
--
-- agents.node, tasks.node, rollouts.node and rollout_agents.node name the
-- node that holds the agent's session, drives the task, drives the rollout
-- and drives one agent's upgrade step; NULL for none. There is no foreign
-- key: a row may name a node whose row was pruned, which counts as dead.

CREATE TABLE nodes (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL,
    advertise       TEXT    NOT NULL,
    http            TEXT    NOT NULL DEFAULT '',
    version         TEXT    NOT NULL,
    started_at      BIGINT  NOT NULL,
    heartbeat_at    BIGINT  NOT NULL,
    heartbeat_every BIGINT  NOT NULL,
    stopped_at      BIGINT,
    draining        INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX nodes_name ON nodes (name);

ALTER TABLE agents ADD COLUMN node TEXT;
CREATE INDEX agents_node ON agents (node);

ALTER TABLE tasks ADD COLUMN node TEXT;

ALTER TABLE rollouts ADD COLUMN node TEXT;

ALTER TABLE rollout_agents ADD COLUMN node TEXT;

-- Uploads (Calamari bundles, agent packages, task files) as the nodes
-- share them: each node keeps its copy in its data folder and fetches from
-- here what another node received. Only a shared database (PostgreSQL,
-- where content is a large object's OID) uses it; the table is here for
-- the schemas to stay alike.
CREATE TABLE blobs (
    key       TEXT   NOT NULL PRIMARY KEY,
    sha256    TEXT   NOT NULL,
    size      BIGINT NOT NULL,
    content   BLOB   NOT NULL,
    stored_at BIGINT NOT NULL
);
