-- Roles of API keys and console users: the PostgreSQL twin of
-- migrations/sqlite/0013_roles.sql (read it for what the columns mean and
-- why existing keys and users get the roles they get).

ALTER TABLE api_keys ADD COLUMN role TEXT COLLATE "C" NOT NULL DEFAULT 'operator';
ALTER TABLE api_keys ADD COLUMN environments TEXT COLLATE "C" NOT NULL DEFAULT '[]';
UPDATE api_keys SET role = 'admin' WHERE admin;

ALTER TABLE users ADD COLUMN role TEXT COLLATE "C" NOT NULL DEFAULT 'operator';
ALTER TABLE users ADD COLUMN environments TEXT COLLATE "C" NOT NULL DEFAULT '[]';
UPDATE users SET role = 'admin';
