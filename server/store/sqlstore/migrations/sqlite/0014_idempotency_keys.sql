-- Idempotent creates. A create request sent with an Idempotency-Key is
-- recorded here before it runs, so that the same request sent again (a
-- client retrying after a broken connection) is answered from the record
-- instead of creating twice.
--
-- scope is the caller and the route ("API key \"ci\" POST /api/tasks"): a
-- key is one caller's, for one route. request_sha256 is the body's hash:
-- a key sent again with another body is refused. ref is the id the
-- request creates under (a task group, a rollout), chosen when the key is
-- reserved, so that a retry can find what a request whose node died
-- after its commit created. status is 0 while the request runs; body is
-- the answer once it completed (NULL when the answer held a secret). node
-- runs it. Rows older than a day are purged.
CREATE TABLE idempotency_keys (
    scope          TEXT NOT NULL,
    key            TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    ref            TEXT NOT NULL,
    status         INTEGER NOT NULL DEFAULT 0,
    body           TEXT,
    node           TEXT NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    completed_at   INTEGER,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
