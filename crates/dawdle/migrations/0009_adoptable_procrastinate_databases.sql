-- dawdle migration 0009: what adopting a Procrastinate database in place
-- needs, and Procrastinate's name for the abort-request check.
--
-- 1. The check that a waiting job carries no abort request takes the name
--    Procrastinate's schema gives it, so a violation reads the same whichever
--    schema the database has (an adopted database keeps that name already).
-- 2. A statement run with `dawdle.backfill = 'on'` set in its transaction
--    records no history and wakes no worker. `dawdle schema adopt` fills the
--    runbook's timestamp columns of existing jobs that way: without it, every
--    waiting job with a schedule would get a second `scheduled` event, as any
--    update of such a job records one. Checked once per statement.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'procrastinate_jobs'::regclass
                 AND conname = 'procrastinate_jobs_check_not_todo_abort_requested') THEN
        ALTER TABLE procrastinate_jobs
            RENAME CONSTRAINT procrastinate_jobs_check_not_todo_abort_requested
            TO check_not_todo_abort_requested;
    END IF;
END;
$$;

DROP TRIGGER dawdle_jobs_after_update_v1 ON procrastinate_jobs;
CREATE TRIGGER dawdle_jobs_after_update_v1
    AFTER UPDATE ON procrastinate_jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    WHEN (coalesce(current_setting('dawdle.backfill', true), '') <> 'on')
    EXECUTE FUNCTION dawdle_jobs_after_update_v1();
