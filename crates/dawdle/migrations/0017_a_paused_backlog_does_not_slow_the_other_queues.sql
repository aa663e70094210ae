-- dawdle migration 0017: a paused queue's backlog no longer slows the fetch
-- of a Python worker that serves every queue.
--
-- A Python worker started without queues fetches with no queue list, which
-- read the claim order index of every queue from its head and passed over
-- the jobs of paused queues one by one. A queue is paused when something
-- it needs is down, so its backlog grows for as long as the pause lasts,
-- and every fetch, of every job of every other queue, read through all of
-- it: with 100,000 jobs waiting in a paused queue, 30 ms per fetch against
-- 0.8 ms for a fetch that listed the other queues, so a Python worker ran
-- at most some 30 jobs a second while the pause lasted.
--
-- Now, while any queue is paused, a fetch for every queue first finds the
-- queues that have waiting jobs, one step of the per-queue index for each
-- (a skip scan: the first waiting queue, then the first after it, and so
-- on), and fetches from those that are not paused as it does for a listed
-- set: each one's first job in the per-queue index, then the first of them.
-- It reads a few index entries per queue instead of the paused backlog.
-- The job it claims is the one the claim order index would have given:
-- highest priority, then oldest, among the runnable jobs of queues not
-- paused. Without a pause nothing changes: the claim order index is read
-- from its head, which stops at the first runnable job.
--
-- The trade-off, only while a queue is paused: a queue whose waiting jobs
-- are all scheduled for later is read through to its end on each fetch
-- (no runnable job to stop at), where the claim order index might have
-- found another queue's runnable job first. The claim order index reads
-- such jobs too whenever they come first in claim order, as older jobs do.
--
-- dawdle's own worker is not concerned: its claims start where its last
-- one ended (migration 0012), past the paused jobs it stepped over once.
CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(target_queue_names varchar[], p_worker_id bigint)
RETURNS procrastinate_jobs
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_sort = off
AS $$
DECLARE
    claimed procrastinate_jobs;
    paused varchar[];
    listed varchar[] := target_queue_names;
    candidate bigint;
BEGIN
    IF p_worker_id IS NOT NULL THEN
        PERFORM 1 FROM procrastinate_workers WHERE id = p_worker_id FOR KEY SHARE;
        IF NOT FOUND THEN
            SELECT * INTO claimed FROM dawdle_fetch_jobs_v1(target_queue_names, NULL, 1);
            IF claimed.id IS NOT NULL THEN
                RAISE USING
                    ERRCODE = 'foreign_key_violation',
                    MESSAGE = 'insert or update on table "procrastinate_jobs" violates foreign key constraint "procrastinate_jobs_worker_id_fkey"',
                    DETAIL = format('Key (worker_id)=(%s) is not present in table "procrastinate_workers".', p_worker_id),
                    CONSTRAINT = 'procrastinate_jobs_worker_id_fkey',
                    TABLE = 'procrastinate_jobs',
                    SCHEMA = current_schema();
            END IF;
            RETURN claimed;
        END IF;
    END IF;

    SELECT array_agg(p.queue_name) INTO paused FROM dawdle_queue_pauses AS p;

    IF target_queue_names IS NULL AND paused IS NOT NULL THEN
        -- Every queue while some are paused: the queues with waiting jobs,
        -- one step of the per-queue index each, less the paused ones.
        WITH RECURSIVE waiting (queue_name) AS (
            (SELECT j.queue_name
             FROM procrastinate_jobs AS j
             WHERE j.status = 'todo'
             ORDER BY j.queue_name
             LIMIT 1)
            UNION ALL
            SELECT (SELECT j.queue_name
                    FROM procrastinate_jobs AS j
                    WHERE j.status = 'todo' AND j.queue_name > waiting.queue_name
                    ORDER BY j.queue_name
                    LIMIT 1)
            FROM waiting
            WHERE waiting.queue_name IS NOT NULL
        )
        SELECT array_agg(w.queue_name) INTO listed
        FROM waiting AS w
        WHERE w.queue_name IS NOT NULL AND w.queue_name <> ALL (paused);
        -- Only paused queues have waiting jobs.
        IF listed IS NULL THEN
            RETURN claimed;
        END IF;
    END IF;

    IF listed IS NULL THEN
        -- Every queue: the first job in the claim order index.
        SELECT c.id INTO candidate
        FROM procrastinate_jobs AS c
        WHERE c.status = 'todo'
          AND (paused IS NULL OR c.queue_name <> ALL (paused))
          AND (c.scheduled_at IS NULL OR c.scheduled_at <= now())
          AND (c.lock IS NULL OR dawdle_lock_is_free_v1(c.lock, c.priority, c.id))
        ORDER BY c.priority DESC, c.id ASC
        LIMIT 1
        FOR UPDATE OF c SKIP LOCKED;
    ELSE
        -- Listed queues: each queue's first job in the per-queue index, then
        -- the first of them. The others stay locked until the fetch commits.
        SELECT first_of_queue.id INTO candidate
        FROM (SELECT DISTINCT q.name
              FROM unnest(listed) AS q (name)
              WHERE paused IS NULL OR q.name <> ALL (paused)) AS queue
        CROSS JOIN LATERAL (
            SELECT c.id, c.priority
            FROM procrastinate_jobs AS c
            WHERE c.status = 'todo' AND c.queue_name = queue.name
              AND (c.scheduled_at IS NULL OR c.scheduled_at <= now())
              AND (c.lock IS NULL OR dawdle_lock_is_free_v1(c.lock, c.priority, c.id))
            ORDER BY c.priority DESC, c.id ASC
            LIMIT 1
            FOR UPDATE OF c SKIP LOCKED
        ) AS first_of_queue
        ORDER BY first_of_queue.priority DESC, first_of_queue.id ASC
        LIMIT 1;
    END IF;

    -- Nothing runnable: no update at all (an idle worker's fetch).
    IF candidate IS NOT NULL THEN
        UPDATE procrastinate_jobs AS j
        SET status = 'doing',
            worker_id = p_worker_id,
            started_at = clock_timestamp(),
            finished_at = NULL
        WHERE j.id = candidate
        RETURNING j.* INTO claimed;
    END IF;
    RETURN claimed;
END;
$$;
