-- Idempotent creates: the PostgreSQL twin of
-- migrations/sqlite/0014_idempotency_keys.sql (read it for what the
-- columns mean).
CREATE TABLE idempotency_keys (
    scope          TEXT COLLATE "C" NOT NULL,
    key            TEXT COLLATE "C" NOT NULL,
    request_sha256 TEXT COLLATE "C" NOT NULL,
    ref            TEXT COLLATE "C" NOT NULL,
    status         INTEGER NOT NULL DEFAULT 0,
    body           TEXT COLLATE "C",
    node           TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    completed_at   BIGINT,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
