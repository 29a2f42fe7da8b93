-- The features an agent said it has in the Hello of its last session
-- (protocol.Feature*: task isolation, task variables, work retention), a
-- JSON array. Every node reads them, so the console of any node can say
-- which machines lack a feature. '[]' until an agent that names them
-- connects.
ALTER TABLE agents ADD COLUMN features TEXT NOT NULL DEFAULT '[]';
