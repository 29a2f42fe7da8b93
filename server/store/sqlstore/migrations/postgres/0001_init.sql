-- Initial schema: the PostgreSQL twin of migrations/sqlite/0001_init.sql.
--
-- Column for column the same as the SQLite schema, so both stores behave
-- alike: times are BIGINT unix nanoseconds in UTC (TIMESTAMPTZ would lose
-- the nanoseconds the SQLite store keeps), NULL where the Go value is the
-- zero time; string lists are JSON arrays in TEXT. Every TEXT column is
-- COLLATE "C": ordering and comparison are then bytewise, as in SQLite,
-- whatever locale the operator's database was created with.

CREATE TABLE agents (
    id                    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name                  TEXT COLLATE "C" NOT NULL UNIQUE,
    environment           TEXT COLLATE "C" NOT NULL,
    thumbprint            TEXT COLLATE "C" NOT NULL UNIQUE,
    next_thumbprint       TEXT COLLATE "C",
    version               TEXT COLLATE "C" NOT NULL DEFAULT '',
    os                    TEXT COLLATE "C" NOT NULL DEFAULT '',
    arch                  TEXT COLLATE "C" NOT NULL DEFAULT '',
    protocol              INTEGER NOT NULL DEFAULT 0,
    tls_version           TEXT COLLATE "C" NOT NULL DEFAULT '',
    calamari_versions     TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    health                TEXT COLLATE "C" NOT NULL DEFAULT 'unavailable',
    health_detail         TEXT COLLATE "C" NOT NULL DEFAULT '',
    health_rtt            BIGINT  NOT NULL DEFAULT 0,
    disk_free             BIGINT  NOT NULL DEFAULT -1,
    server_thumbprint_ack TEXT COLLATE "C" NOT NULL DEFAULT '',
    registered_at         BIGINT  NOT NULL,
    last_seen             BIGINT,
    last_health_at        BIGINT
);

CREATE INDEX agents_next_thumbprint ON agents (next_thumbprint);
CREATE INDEX agents_environment_name ON agents (environment, name);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    hash        TEXT COLLATE "C" NOT NULL UNIQUE,
    environment TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT COLLATE "C"
);

CREATE INDEX tokens_created_at ON tokens (created_at);

CREATE TABLE api_keys (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE revoked_thumbprints (
    thumbprint TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    reason     TEXT COLLATE "C" NOT NULL
);

CREATE TABLE settings (
    key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
