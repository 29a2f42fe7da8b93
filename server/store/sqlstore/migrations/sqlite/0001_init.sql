-- Initial schema.
--
-- Portability to PostgreSQL: only TEXT, INTEGER and BIGINT are used. Times
-- are BIGINT unix nanoseconds in UTC, NULL where the Go value is the zero
-- time; durations are BIGINT nanoseconds; string lists are JSON arrays in a
-- TEXT column. Optional thumbprints are NULL rather than '' so that they
-- never match a lookup by accident.

CREATE TABLE agents (
    id                    TEXT    NOT NULL PRIMARY KEY,
    name                  TEXT    NOT NULL UNIQUE,
    environment           TEXT    NOT NULL,
    thumbprint            TEXT    NOT NULL UNIQUE,
    next_thumbprint       TEXT,
    version               TEXT    NOT NULL DEFAULT '',
    os                    TEXT    NOT NULL DEFAULT '',
    arch                  TEXT    NOT NULL DEFAULT '',
    protocol              INTEGER NOT NULL DEFAULT 0,
    tls_version           TEXT    NOT NULL DEFAULT '',
    calamari_versions     TEXT    NOT NULL DEFAULT '[]',
    health                TEXT    NOT NULL DEFAULT 'unavailable',
    health_detail         TEXT    NOT NULL DEFAULT '',
    health_rtt            BIGINT  NOT NULL DEFAULT 0,
    disk_free             BIGINT  NOT NULL DEFAULT -1,
    server_thumbprint_ack TEXT    NOT NULL DEFAULT '',
    registered_at         BIGINT  NOT NULL,
    last_seen             BIGINT,
    last_health_at        BIGINT
);

-- Agents authenticate by thumbprint or, during a rotation, by their next
-- thumbprint; both lookups happen on every connection.
CREATE INDEX agents_next_thumbprint ON agents (next_thumbprint);
CREATE INDEX agents_environment_name ON agents (environment, name);

CREATE TABLE tokens (
    id          TEXT   NOT NULL PRIMARY KEY,
    hash        TEXT   NOT NULL UNIQUE,
    environment TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
);

CREATE INDEX tokens_created_at ON tokens (created_at);

CREATE TABLE api_keys (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    hash       TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE revoked_thumbprints (
    thumbprint TEXT   NOT NULL PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason     TEXT   NOT NULL
);

CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
