-- dawdle migration 0005: a job that releases its lock wakes the workers for
-- the next job of that lock.
--
-- While a job of a lock is `doing`, claims skip the lock's other jobs, and
-- nothing announced them when it ended: they waited for some worker's poll
-- interval (2 s by default), so a chain of short jobs on one lock ran at one
-- job per poll. Now, when a `doing` job with a lock leaves `doing` (any end,
-- a retry, a job put back) or is deleted, the statement sends a
-- `job_inserted` wake-up for the lock's next job in claim order, if that job
-- is runnable now. Python workers listen on the same channels, so they pick
-- it up as well. Statements that release no lock (claims, lock-free
-- completions) pay one scan of their transition table for the check.

-- Functions called from the update trigger run under its enable_nestloop =
-- off (0004). A join that can only be a nested loop (a LATERAL lookup or
-- list) stays one, but is costed as a disabled plan, far above the JIT
-- thresholds: each call then compiled its statement, 100-500 ms for a few
-- rows, on every retry recorded as runnable at once (and would have on every
-- lock hand-off). Their statements handle a handful of rows; JIT never pays.
ALTER FUNCTION dawdle_notify_runnable_v1(varchar[], bigint[]) SET jit = off;

-- One `job_inserted` wake-up per queue for the next `todo` job of each of
-- `freed_locks` (the one a claim would take first: priority desc, id asc),
-- unless it is scheduled for later (its schedule wakes the workers) or is
-- among `announced` (the caller has notified it already).
CREATE FUNCTION dawdle_notify_lock_successors_v1(freed_locks text[], announced bigint[])
RETURNS void
LANGUAGE plpgsql
SET jit = off
AS $$
BEGIN
    PERFORM dawdle_notify_runnable_v1(array_agg(successor.queue_name), array_agg(successor.id))
    FROM unnest(freed_locks) AS freed (lock)
    CROSS JOIN LATERAL (
        SELECT next.id, next.queue_name, next.scheduled_at
        FROM procrastinate_jobs AS next
        WHERE next.lock = freed.lock AND next.lock IS NOT NULL AND next.status = 'todo'
        ORDER BY next.priority DESC, next.id ASC
        LIMIT 1
    ) AS successor
    WHERE (successor.scheduled_at IS NULL OR successor.scheduled_at <= now())
      AND successor.id <> ALL (coalesce(announced, '{}'))
    HAVING count(*) > 0;
END;
$$;

-- As in 0001, plus the wake-up for the successors of released locks and a
-- `cancelled` event for a running job its task cancelled. The SET clauses
-- keep 0004's planner setting, which CREATE OR REPLACE would otherwise drop,
-- and keep the abort notification's join (priced high by that setting) from
-- being JIT-compiled, as for the wake-ups.
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

    -- Jobs that became runnable (a retry, a reset) wake the workers.
    IF EXISTS (SELECT 1 FROM new_jobs WHERE status = 'todo') THEN
        PERFORM dawdle_notify_runnable_v1(array_agg(cur.queue_name), array_agg(cur.id))
        FROM old_jobs AS prev
        JOIN new_jobs AS cur ON cur.id = prev.id
        WHERE cur.status = 'todo' AND prev.status <> 'todo'
          AND (cur.scheduled_at IS NULL OR cur.scheduled_at <= now())
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

-- As in 0001, plus the wake-up for the successors of deleted running jobs
-- (a worker that deletes finished jobs instead of keeping them).
CREATE OR REPLACE FUNCTION dawdle_jobs_after_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM procrastinate_events AS event
    USING deleted_jobs AS job
    WHERE event.job_id = job.id;

    IF EXISTS (SELECT 1 FROM deleted_jobs WHERE status = 'doing' AND lock IS NOT NULL) THEN
        PERFORM dawdle_notify_lock_successors_v1(array_agg(DISTINCT lock), '{}')
        FROM deleted_jobs
        WHERE status = 'doing' AND lock IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;
