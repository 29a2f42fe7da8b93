-- Disk retention on agents: the PostgreSQL twin of
-- migrations/sqlite/0011_work_retention.sql (read it for what the columns
-- mean and where the defaults come from).
ALTER TABLE machine_policy ADD COLUMN work_keep INTEGER NOT NULL DEFAULT 50;
ALTER TABLE machine_policy ADD COLUMN work_min_free BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN work TEXT COLLATE "C";
