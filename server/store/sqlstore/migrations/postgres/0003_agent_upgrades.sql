-- Agent packages and staged rollouts: the PostgreSQL twin of
-- migrations/sqlite/0003_agent_upgrades.sql. allow_downgrade is a BOOLEAN
-- here, since PostgreSQL does not treat integers as truth values.

CREATE TABLE agent_packages (
    version     TEXT COLLATE "C" NOT NULL,
    os          TEXT COLLATE "C" NOT NULL,
    arch        TEXT COLLATE "C" NOT NULL,
    sha256      TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    signature   BYTEA  NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (version, os, arch)
);

CREATE TABLE rollouts (
    id                 TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    target_environment TEXT COLLATE "C" NOT NULL, -- '' = every environment
    version            TEXT COLLATE "C" NOT NULL,
    batch              INTEGER NOT NULL,
    max_failures       INTEGER NOT NULL,
    allow_downgrade    BOOLEAN NOT NULL,
    grace_seconds      INTEGER NOT NULL,
    state              TEXT COLLATE "C" NOT NULL,
    reason             TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at         BIGINT  NOT NULL,
    finished_at        BIGINT
);

CREATE INDEX rollouts_state ON rollouts (state);

CREATE TABLE rollout_agents (
    rollout_id   TEXT COLLATE "C" NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    agent_id     TEXT COLLATE "C" NOT NULL,
    agent_name   TEXT COLLATE "C" NOT NULL,
    from_version TEXT COLLATE "C" NOT NULL,
    position     INTEGER NOT NULL,
    batch_index  INTEGER NOT NULL,
    state        TEXT COLLATE "C" NOT NULL,
    reason       TEXT COLLATE "C" NOT NULL DEFAULT '',
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (rollout_id, agent_id)
);

CREATE INDEX rollout_agents_agent ON rollout_agents (agent_id);
