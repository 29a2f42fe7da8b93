-- Console users, and which API keys may manage credentials.
--
-- users.password_hash is a PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash):
-- the parameters travel with the hash, so they can be raised later without
-- locking out anyone. Names are unique whatever their case: "Alice" and
-- "alice" signing in as two people would only confuse.
--
-- api_keys.admin marks keys that may manage users and API keys. Every key
-- made before this migration could do everything, so every one of them
-- stays an admin key.

CREATE TABLE users (
    id            TEXT   NOT NULL PRIMARY KEY,
    name          TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE UNIQUE INDEX users_name ON users (lower(name));

ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
UPDATE api_keys SET admin = 1;
