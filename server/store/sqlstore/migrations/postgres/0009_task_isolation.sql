-- Task isolation per target: the PostgreSQL twin of
-- migrations/sqlite/0009_task_isolation.sql (read it for what the
-- columns mean).
ALTER TABLE tasks ADD COLUMN isolation TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN locks TEXT COLLATE "C" NOT NULL DEFAULT '[]';
