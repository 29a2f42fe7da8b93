-- Variables, output variables and artifacts of a task.
-- variables is a JSON array of {"name","value"}: plain variables, shown
-- by the API. sensitive is a JSON array of {"name","sealed"}: the values
-- sealed (AES-256-GCM) under the coordinator's master key, never
-- plaintext; the sealed values are dropped once the task is final, and
-- the names stay for the task's page. outputs is a JSON object of the
-- output variables the task's script set; artifacts a JSON array of the
-- files it attached ({"name","size","sha256"}), stored as blobs.
ALTER TABLE tasks ADD COLUMN variables TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN sensitive TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN outputs TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN artifacts TEXT NOT NULL DEFAULT '[]';
