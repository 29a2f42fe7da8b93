-- Mirrors migrations/sqlite/0007_rollout_named_agents.sql: a rollout may
-- target agents by name (named_agents), whose agents are the ones in its
-- rollout_agents rows (target_environment is then '').
ALTER TABLE rollouts ADD COLUMN named_agents BOOLEAN NOT NULL DEFAULT FALSE;
