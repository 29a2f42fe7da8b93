-- Calls between coordinator nodes: the PostgreSQL twin of
-- migrations/sqlite/0015_node_calls.sql (read it for what the columns
-- mean). answers is a BOOLEAN here.
CREATE TABLE node_calls (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    node        TEXT COLLATE "C" NOT NULL,
    from_node   TEXT COLLATE "C" NOT NULL,
    agent_id    TEXT COLLATE "C" NOT NULL,
    action      TEXT COLLATE "C" NOT NULL,
    args        TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    accepted_at BIGINT,
    answered_at BIGINT,
    result      TEXT COLLATE "C" NOT NULL DEFAULT '',
    error_kind  TEXT COLLATE "C" NOT NULL DEFAULT '',
    error       TEXT COLLATE "C" NOT NULL DEFAULT ''
);

CREATE INDEX node_calls_node ON node_calls (node, accepted_at);

ALTER TABLE nodes ADD COLUMN answers BOOLEAN NOT NULL DEFAULT FALSE;
