-- Task isolation per target: isolation is 'full' (the task runs alone on
-- its agent) or 'none'; locks is a JSON array of lock names the task
-- holds while it runs, tasks sharing one running one after the other.
-- Both are kept with the task so that a coordinator that re-drives it
-- after a restart or a failover sends the agent the same. Tasks created
-- before this migration have '' (full, the agent's default) and '[]'.
ALTER TABLE tasks ADD COLUMN isolation TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN locks TEXT NOT NULL DEFAULT '[]';
