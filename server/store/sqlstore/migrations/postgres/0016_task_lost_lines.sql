-- Output a task lost: the PostgreSQL twin of
-- migrations/sqlite/0016_task_lost_lines.sql (read it for what the
-- columns mean).
ALTER TABLE tasks ADD COLUMN lost_lines BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN lost_reason TEXT COLLATE "C" NOT NULL DEFAULT '';
