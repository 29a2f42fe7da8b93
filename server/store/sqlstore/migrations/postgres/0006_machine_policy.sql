-- Machine policies: the PostgreSQL twin of
-- migrations/sqlite/0006_machine_policy.sql (read it for what the columns
-- mean and where the defaults come from).

CREATE TABLE machine_policy (
    id                   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    health_interval_ns   BIGINT  NOT NULL,
    calamari_keep        INTEGER NOT NULL,
    upgrade_batch        INTEGER NOT NULL,
    upgrade_max_failures INTEGER NOT NULL,
    set_by               TEXT COLLATE "C" NOT NULL,
    updated_at           BIGINT
);

INSERT INTO machine_policy (id, health_interval_ns, calamari_keep, upgrade_batch, upgrade_max_failures, set_by)
VALUES (1, 60000000000, 3, 10, 0, 'default');
