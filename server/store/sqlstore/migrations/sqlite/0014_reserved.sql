-- Reserved: number 14 belongs to another change of issue 20, made on a
-- branch of its own. This empty file keeps the numbering gapless on the
-- branch that brings 0015_node_calls.sql; it is replaced by that change's
-- migration when the branches are merged.
SELECT 1;
