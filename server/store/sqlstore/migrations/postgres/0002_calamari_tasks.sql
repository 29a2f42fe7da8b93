-- Calamari bundles and deployment tasks: the PostgreSQL twin of
-- migrations/sqlite/0002_calamari_tasks.sql.
--
-- Where SQLite keeps arbitrary bytes in TEXT, PostgreSQL refuses NUL and
-- invalid UTF-8 there, so those columns are BYTEA: a bundle's manifest (the
-- exact bytes that were signed) and its signature, and a task's log lines
-- (program output, which can hold NULs: UTF-16 from Windows tools, say).

CREATE TABLE calamari_bundles (
    version     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    sha256      TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    manifest    BYTEA  NOT NULL,
    signature   BYTEA  NOT NULL,
    uploaded_at BIGINT NOT NULL
);

CREATE TABLE tasks (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    group_id    TEXT COLLATE "C" NOT NULL,
    agent_id    TEXT COLLATE "C" NOT NULL,
    agent_name  TEXT COLLATE "C" NOT NULL,
    args        TEXT COLLATE "C" NOT NULL, -- JSON array
    calamari    TEXT COLLATE "C" NOT NULL,
    file_name   TEXT COLLATE "C" NOT NULL DEFAULT '',
    file_sha256 TEXT COLLATE "C" NOT NULL DEFAULT '',
    state       TEXT COLLATE "C" NOT NULL,
    exit_code   INTEGER NOT NULL DEFAULT 0,
    error       TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    last_seq    BIGINT  NOT NULL DEFAULT 0,
    agent_seq   BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX tasks_state ON tasks (state);
CREATE INDEX tasks_group ON tasks (group_id);
CREATE INDEX tasks_created_at ON tasks (created_at);

CREATE TABLE task_logs (
    task_id   TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq       BIGINT NOT NULL,
    agent_seq BIGINT,
    at        BIGINT NOT NULL,
    stream    TEXT COLLATE "C" NOT NULL,
    text      BYTEA  NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE UNIQUE INDEX task_logs_agent_seq ON task_logs (task_id, agent_seq);
