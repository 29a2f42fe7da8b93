-- Roles of API keys and console users (api.Role): admin, operator,
-- deployer or viewer, and a deployer's environments, a JSON array of
-- names (matched whatever their case).
--
-- What each credential could do before stays what it may do: an admin
-- key stays admin, every other key becomes an operator (what a key that
-- was not an admin key could do). Console users could manage users and API
-- keys in the console, so every existing user becomes an admin.
--
-- api_keys.admin stays, kept equal to role = 'admin' by the store: the
-- refusal to revoke the last admin key counts it.

ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'operator';
ALTER TABLE api_keys ADD COLUMN environments TEXT NOT NULL DEFAULT '[]';
UPDATE api_keys SET role = 'admin' WHERE admin = 1;

ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'operator';
ALTER TABLE users ADD COLUMN environments TEXT NOT NULL DEFAULT '[]';
UPDATE users SET role = 'admin';
