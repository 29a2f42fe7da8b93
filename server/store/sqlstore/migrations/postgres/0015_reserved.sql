-- Placeholder for migration 15, which another change of issue 20 adds on
-- its own branch. It keeps this branch's migrations gapless; the merge
-- replaces it with that change's file.
SELECT 1;
