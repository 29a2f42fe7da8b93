-- Agent packages (signed agent binaries) and staged rollouts of them.
--
-- rollout_agents keeps the agent's name, like tasks: a rollout's history
-- stays readable after an agent is deleted, so there is no foreign key to
-- agents.

CREATE TABLE agent_packages (
    version     TEXT   NOT NULL,
    os          TEXT   NOT NULL,
    arch        TEXT   NOT NULL,
    sha256      TEXT   NOT NULL,
    size        BIGINT NOT NULL,
    signature   TEXT   NOT NULL, -- hex
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (version, os, arch)
);

CREATE TABLE rollouts (
    id                 TEXT    NOT NULL PRIMARY KEY,
    target_environment TEXT    NOT NULL, -- '' = every environment
    version            TEXT    NOT NULL,
    batch              INTEGER NOT NULL,
    max_failures       INTEGER NOT NULL,
    allow_downgrade    INTEGER NOT NULL,
    grace_seconds      INTEGER NOT NULL,
    state              TEXT    NOT NULL, -- running | succeeded | halted
    reason             TEXT    NOT NULL DEFAULT '',
    created_at         BIGINT  NOT NULL,
    finished_at        BIGINT
);

CREATE INDEX rollouts_state ON rollouts (state);

CREATE TABLE rollout_agents (
    rollout_id   TEXT    NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    agent_id     TEXT    NOT NULL,
    agent_name   TEXT    NOT NULL,
    from_version TEXT    NOT NULL,
    position     INTEGER NOT NULL, -- the stable order: environment, then name
    batch_index  INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    reason       TEXT    NOT NULL DEFAULT '',
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (rollout_id, agent_id)
);

CREATE INDEX rollout_agents_agent ON rollout_agents (agent_id);
