-- The features an agent said it has: the PostgreSQL twin of
-- migrations/sqlite/0012_agent_features.sql (read it for what the column
-- means).
ALTER TABLE agents ADD COLUMN features TEXT COLLATE "C" NOT NULL DEFAULT '[]';
