-- A rollout may target agents by name rather than an environment or the
-- whole fleet: named_agents is 1 for those, whose agents are the ones in
-- its rollout_agents rows (target_environment is then '').
ALTER TABLE rollouts ADD COLUMN named_agents INTEGER NOT NULL DEFAULT 0;
