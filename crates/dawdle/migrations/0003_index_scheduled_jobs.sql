-- dawdle migration 0003: find the next scheduled job quickly.
--
-- An idle worker sleeps until the earliest future `scheduled_at` (a retry's
-- backoff, a job deferred for later) instead of waiting for its next poll.
-- Partial on waiting jobs with a schedule: only those pay for it, once.
CREATE INDEX dawdle_jobs_scheduled_idx
    ON procrastinate_jobs (scheduled_at)
    WHERE status = 'todo' AND scheduled_at IS NOT NULL;
