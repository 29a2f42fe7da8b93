-- Coordinator nodes: the PostgreSQL twin of migrations/sqlite/0004_nodes.sql
-- (read it for what the columns mean). draining is a BOOLEAN here.

CREATE TABLE nodes (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name            TEXT COLLATE "C" NOT NULL,
    advertise       TEXT COLLATE "C" NOT NULL,
    http            TEXT COLLATE "C" NOT NULL DEFAULT '',
    version         TEXT COLLATE "C" NOT NULL,
    started_at      BIGINT  NOT NULL,
    heartbeat_at    BIGINT  NOT NULL,
    heartbeat_every BIGINT  NOT NULL,
    stopped_at      BIGINT,
    draining        BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE INDEX nodes_name ON nodes (name);

ALTER TABLE agents ADD COLUMN node TEXT COLLATE "C";
CREATE INDEX agents_node ON agents (node);

ALTER TABLE tasks ADD COLUMN node TEXT COLLATE "C";

ALTER TABLE rollouts ADD COLUMN node TEXT COLLATE "C";

ALTER TABLE rollout_agents ADD COLUMN node TEXT COLLATE "C";

-- Uploads the nodes share (see the SQLite twin); content is the OID of a
-- large object, streamed in and out rather than held in memory.
CREATE TABLE blobs (
    key       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    sha256    TEXT COLLATE "C" NOT NULL,
    size      BIGINT NOT NULL,
    content   OID    NOT NULL,
    stored_at BIGINT NOT NULL
);
