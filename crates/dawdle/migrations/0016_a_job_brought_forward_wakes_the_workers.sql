-- dawdle migration 0016: a waiting job brought forward wakes the workers.
--
-- A job scheduled for later that someone brings forward (`UPDATE
-- procrastinate_jobs SET scheduled_at = now() WHERE id = ...` at psql, an
-- application rescheduling its own job) stays `todo`, so the update trigger
-- announced nothing. Its id usually lies below a running worker's claim
-- floor, where only a claim from the head of the claim order finds it, and
-- the worker's looks for scheduled jobs cannot see it while the update has
-- not committed: one that read the table then, and took its time as the
-- mark for the next, left it to the worker's 30 s full pass. Now the
-- statement names it in a `job_inserted` wake-up, delivered at commit, as
-- for a retry; the worker lowers its floor to it. A job counts as due by
-- clock_timestamp(), so a schedule set to the statement's own now() does.
-- Everything else is as in migration 0005.

CREATE OR REPLACE FUNCTION dawdle_jobs_after_update_v1() RETURNS trigger
LANGUAGE plpgsql
SET enable_nestloop = off
SET jit = off
AS $$
BEGIN
    -- As on insert, one statement per event kind, in the order Procrastinate
    -- records them for one job: scheduled, abort_requested, the transition.
    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT id, 'scheduled', scheduled_at
    FROM new_jobs
    WHERE status = 'todo' AND scheduled_at IS NOT NULL;

    -- Claims and completions never raise the flag: skip the join for them.
    IF EXISTS (SELECT 1 FROM new_jobs WHERE abort_requested) THEN
        INSERT INTO procrastinate_events (job_id, type, at)
        SELECT cur.id, 'abort_requested', now()
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        WHERE cur.abort_requested AND NOT prev.abort_requested;

        PERFORM pg_notify(channel.name,
                          jsonb_build_object('type', 'abort_job_requested', 'job_id', cur.id)::text)
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        CROSS JOIN LATERAL (VALUES
            (dawdle_channel_name('procrastinate_queue_v1#' || cur.queue_name)),
            ('procrastinate_any_queue_v1')
        ) AS channel (name)
        WHERE cur.status = 'doing' AND cur.abort_requested AND NOT prev.abort_requested;
    END IF;

    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT transition.id, transition.type, now()
    FROM (
        SELECT cur.id,
               CASE
                   WHEN prev.status = 'todo' AND cur.status = 'doing' THEN 'started'
                   WHEN prev.status = 'doing' AND cur.status = 'todo' THEN 'deferred_for_retry'
                   WHEN prev.status = 'doing' AND cur.status = 'failed' THEN 'failed'
                   WHEN prev.status = 'doing' AND cur.status = 'succeeded' THEN 'succeeded'
                   WHEN prev.status = 'doing' AND cur.status = 'aborted' THEN 'aborted'
                   WHEN prev.status = 'doing' AND cur.status = 'cancelled' THEN 'cancelled'
                   WHEN prev.status = 'todo'
                        AND cur.status IN ('cancelled', 'failed', 'succeeded') THEN 'cancelled'
                   WHEN prev.status = 'failed' AND cur.status = 'todo' THEN 'retried'
               END::procrastinate_job_event_type AS type
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        WHERE cur.status <> prev.status
    ) AS transition
    WHERE transition.type IS NOT NULL;

    -- Jobs that became runnable wake the workers: a retry, a reset, and a
    -- waiting job brought forward (scheduled for later, now due). Due by
    -- the clock, not by the transaction's start: a schedule the statement
    -- itself computed (`now()`, or the client's clock just before) counts.
    IF EXISTS (SELECT 1 FROM new_jobs WHERE status = 'todo') THEN
        PERFORM dawdle_notify_runnable_v1(array_agg(cur.queue_name), array_agg(cur.id))
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        WHERE cur.status = 'todo'
          AND (cur.scheduled_at IS NULL OR cur.scheduled_at <= clock_timestamp())
          AND (prev.status <> 'todo' OR prev.scheduled_at > now())
        HAVING count(*) > 0;
    END IF;

    -- Jobs that released a lock wake the workers for the lock's next job;
    -- those just announced above (a job retried at once is often its own
    -- successor) are not announced twice.
    IF EXISTS (SELECT 1 FROM old_jobs WHERE status = 'doing' AND lock IS NOT NULL) THEN
        PERFORM dawdle_notify_lock_successors_v1(
            array_agg(DISTINCT prev.lock)
                FILTER (WHERE prev.status = 'doing' AND prev.lock IS NOT NULL
                              AND cur.status <> 'doing'),
            array_agg(cur.id) FILTER (WHERE cur.status = 'todo' AND prev.status <> 'todo'))
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id;
    END IF;
    RETURN NULL;
END;
$$;
