-- Disk retention on agents. The machine policy gains the rule every agent
-- applies to its task folders (<home>/Work/<ticket>): work_keep, how many
-- finished ones it keeps, newest first (50, as Octopus keeps the last
-- deployments), and work_min_free, a free-space floor in bytes for the
-- file system holding the agent's home (0: none), below which the oldest
-- finished folders go even past work_keep.
--
-- agents.work is the agent's last report of its task folders, a JSON
-- object (api.AgentWork): NULL until an agent that reports it was checked.
ALTER TABLE machine_policy ADD COLUMN work_keep INTEGER NOT NULL DEFAULT 50;
ALTER TABLE machine_policy ADD COLUMN work_min_free BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN work TEXT;
