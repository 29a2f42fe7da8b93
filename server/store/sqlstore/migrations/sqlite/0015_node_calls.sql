-- Calls between coordinator nodes. A per-agent action (a health check, a
-- Calamari update, diagnostics) needs the agent's session, which one node
-- holds; asked through another node, it becomes a row here, addressed to
-- the holder (node), which takes it (accepted_at), does it and writes its
-- answer (answered_at, and result, a JSON document, or error_kind and
-- error). The node that asked (from_node) reads the answer and deletes
-- the row. A file an action makes (a diagnostics archive) travels as the
-- blob 'call/<id>'. Rows whose asker went away are pruned by age.
CREATE TABLE node_calls (
    id          TEXT    NOT NULL PRIMARY KEY,
    node        TEXT    NOT NULL,
    from_node   TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    args        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    accepted_at BIGINT,
    answered_at BIGINT,
    result      TEXT    NOT NULL DEFAULT '',
    error_kind  TEXT    NOT NULL DEFAULT '',
    error       TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX node_calls_node ON node_calls (node, accepted_at);

-- answers says the node takes other nodes' calls. Nodes of earlier
-- versions, still running during a rolling upgrade of the coordinators, do
-- not: a call for one of their agents is refused at once, saying so,
-- rather than left to time out.
ALTER TABLE nodes ADD COLUMN answers INTEGER NOT NULL DEFAULT 0;
