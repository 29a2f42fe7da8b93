-- Listening agents: the PostgreSQL twin of
-- migrations/sqlite/0008_listening_agents.sql (read it for what the
-- columns mean).
ALTER TABLE agents ADD COLUMN address TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN dial_error TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN dials BOOLEAN NOT NULL DEFAULT FALSE;
