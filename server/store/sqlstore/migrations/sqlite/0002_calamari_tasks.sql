-- Calamari bundles and deployment tasks.
--
-- Tasks keep the agent's name as well as its id: history must stay
-- readable after the agent is deleted, so there is no foreign key to
-- agents.

CREATE TABLE calamari_bundles (
    version     TEXT   NOT NULL PRIMARY KEY,
    sha256      TEXT   NOT NULL,
    size        BIGINT NOT NULL,
    manifest    TEXT   NOT NULL,
    signature   TEXT   NOT NULL, -- hex
    uploaded_at BIGINT NOT NULL
);

CREATE TABLE tasks (
    id          TEXT    NOT NULL PRIMARY KEY,
    group_id    TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    agent_name  TEXT    NOT NULL,
    args        TEXT    NOT NULL, -- JSON array
    calamari    TEXT    NOT NULL,
    file_name   TEXT    NOT NULL DEFAULT '',
    file_sha256 TEXT    NOT NULL DEFAULT '',
    state       TEXT    NOT NULL,
    exit_code   INTEGER NOT NULL DEFAULT 0,
    error       TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    last_seq    BIGINT  NOT NULL DEFAULT 0, -- highest seq of its log
    agent_seq   BIGINT  NOT NULL DEFAULT 0  -- highest agent_seq stored: where to resume
);

CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_group ON tasks (group_id);
CREATE INDEX tasks_created_at ON tasks (created_at);

-- A task's log mixes the coordinator's lines (Calamari pushed, task
-- started, result) with the agent's output. seq is the display order the
-- coordinator assigns; agent_seq is the agent's own sequence number (NULL
-- for coordinator lines), unique per task so that lines re-read after a
-- reconnect are never stored twice.
CREATE TABLE task_logs (
    task_id   TEXT   NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq       BIGINT NOT NULL,
    agent_seq BIGINT,
    at        BIGINT NOT NULL,
    stream    TEXT   NOT NULL,
    text      TEXT   NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE UNIQUE INDEX task_logs_agent_seq ON task_logs (task_id, agent_seq);
