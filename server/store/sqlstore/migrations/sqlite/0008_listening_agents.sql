-- Listening agents: the coordinator dials them instead of waiting for them
-- to dial it. address is the host:port it dials, '' for a polling agent
-- (every agent before this migration); dial_error is why its last dial
-- failed, '' since one succeeded or before any was made. Both are NOT NULL
-- with '' for none, like the other free-text columns of agents, so that
-- existing rows need no backfill.
ALTER TABLE agents ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN dial_error TEXT NOT NULL DEFAULT '';
-- dials says the node dials listening agents. Nodes of earlier versions,
-- still running during a rolling upgrade of the coordinators, do not, and
-- are never the one picked to dial an agent.
ALTER TABLE nodes ADD COLUMN dials INTEGER NOT NULL DEFAULT 0;
