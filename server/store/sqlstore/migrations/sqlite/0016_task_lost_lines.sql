-- Output a task lost: lost_lines counts the lines of its output that
-- never reached the coordinator (the agent's disk refused them, or the
-- agent no longer had them when the coordinator came to collect them),
-- lost_reason says why. 0 and '' for a task that lost nothing, and for
-- every task before this migration: nothing was counted then.
ALTER TABLE tasks ADD COLUMN lost_lines BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN lost_reason TEXT NOT NULL DEFAULT '';
