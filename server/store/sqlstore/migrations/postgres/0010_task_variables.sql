-- Variables, output variables and artifacts of a task: the PostgreSQL
-- twin of migrations/sqlite/0010_task_variables.sql (read it for what
-- the columns mean).
ALTER TABLE tasks ADD COLUMN variables TEXT COLLATE "C" NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN sensitive TEXT COLLATE "C" NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN outputs TEXT COLLATE "C" NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN artifacts TEXT COLLATE "C" NOT NULL DEFAULT '[]';
