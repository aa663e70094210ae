-- dawdle migration 0004: the update trigger's joins stay linear at any size.
--
-- PL/pgSQL caches a statement's plan per session, planned for the size of
-- the transition tables the first time it runs. After a one-job claim, the
-- join of old and new rows was planned as a nested loop; a later statement
-- updating ten thousand jobs in the same session then joined them in
-- quadratic time (5.5 s instead of 0.1 s; minutes for a hundred thousand).
-- Without nested loops these joins hash, which is as cheap for one row.
ALTER FUNCTION dawdle_jobs_after_update_v1() SET enable_nestloop = off;
