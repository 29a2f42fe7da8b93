-- Console users and admin API keys: the PostgreSQL twin of
-- migrations/sqlite/0005_users_key_roles.sql (read it for what the columns
-- mean). admin is a BOOLEAN here.

CREATE TABLE users (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL,
    password_hash TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE UNIQUE INDEX users_name ON users (lower(name));

ALTER TABLE api_keys ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE api_keys SET admin = TRUE;
