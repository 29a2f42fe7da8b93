-- Machine policies: configuration that used to be flags or per-agent
-- defaults and is now kept in the database, so that every coordinator node
-- uses the same values and an operator can change them without a restart.
--
-- One row (id = 1), filled here with the defaults the coordinator used
-- before: health checks every minute (--health-interval), 3 Calamari
-- versions kept on each agent (agent/calamari DefaultKeep), rollouts in
-- batches of 10 halting at the first failure (upgrade --batch and
-- --max-failures).
--
-- set_by says who wrote the row last: "default" (this migration), "flag"
-- (the deprecated --health-interval, written once at start) or "operator"
-- (the API or `tendril-server policy set`). updated_at is NULL until then.

CREATE TABLE machine_policy (
    id                   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    health_interval_ns   BIGINT  NOT NULL,
    calamari_keep        INTEGER NOT NULL,
    upgrade_batch        INTEGER NOT NULL,
    upgrade_max_failures INTEGER NOT NULL,
    set_by               TEXT    NOT NULL,
    updated_at           BIGINT
);

INSERT INTO machine_policy (id, health_interval_ns, calamari_keep, upgrade_batch, upgrade_max_failures, set_by)
VALUES (1, 60000000000, 3, 10, 0, 'default');
