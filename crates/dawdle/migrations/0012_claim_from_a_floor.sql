-- dawdle migration 0012: a claim that can start where the claimer's last
-- one ended, instead of at the head of the claim order.
--
-- A claimed job leaves its entry in the claim indexes (they cover `todo`
-- jobs only, and an index entry is not removed when its row moves on).
-- Vacuum removes such entries, and a scan that meets one whose row is dead
-- to every transaction marks it so that later scans skip it. While any
-- session holds a snapshot older than the claims (a transaction left idle,
-- a long report, a replica's query with hot_standby_feedback), neither
-- happens: every claim reads every entry of every job claimed since, and
-- fetches its row to find it gone. At 800 jobs/s, one such session open for
-- two minutes made a one-job claim read ~100,000 of them, 80 ms.
--
-- dawdle_claim_jobs_v2 takes a floor: a priority and a job id. It then
-- leaves out the jobs of that priority with a smaller id: the claimer's
-- last claim ended there, so every job before it in claim order was taken
-- or passed over (running lock, scheduled for later, row locked by another
-- claimer). The claim reads jobs of a higher priority from the head as
-- before (usually there are none), jobs of the floor's priority from the
-- floor on, where the index scan starts, and lower priorities after them,
-- lazily: a later part is only read if the earlier ones did not fill the
-- claim. The claimer keeps the floor and gives it up (a claim without one)
-- whenever a job may have appeared below it: on start, when a notification
-- names a job below it (it then lowers the floor to that job), when a
-- scheduled job comes due, and at least every so often in any case, for
-- what nothing announces. dawdle_claim_jobs_v1 is v2 without a floor.

CREATE FUNCTION dawdle_claim_jobs_v2(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer,
    floor_priority integer,
    floor_id bigint
) RETURNS TABLE (job procrastinate_jobs, traceparent text, tracestate text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_sort = off
AS $$
DECLARE
    paused varchar[];
    -- The floor's parts go together: without an id there is no floor.
    floored boolean := floor_id IS NOT NULL AND floor_priority IS NOT NULL;
BEGIN
    -- What a foreign key on worker_id would check, once per statement: the
    -- worker is registered, and stays so (the key-share lock blocks its
    -- deletion) until the claim commits. A worker pruned as stalled must
    -- register again rather than claim jobs nobody could find as stalled.
    IF p_worker_id IS NOT NULL THEN
        PERFORM 1 FROM procrastinate_workers WHERE id = p_worker_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE 'cannot claim jobs: worker % is not registered (it may have been pruned as stalled)',
                p_worker_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;

    SELECT array_agg(p.queue_name) INTO paused FROM dawdle_queue_pauses AS p;

    RETURN QUERY
    WITH claimable AS (
        -- Every queue: the claim order index, in order; from the floor on
        -- when there is one. Each part is guarded by a test of parameters
        -- alone, so it runs or not as a whole, and the parts are read in
        -- claim order only as far as the claim's size.
        SELECT every_queue.id
        FROM (
            SELECT part.id FROM (
                SELECT b1.* FROM (SELECT j.id
                 FROM procrastinate_jobs AS j
                 WHERE target_queue_names IS NULL AND NOT floored
                   AND j.status = 'todo'
                   AND (paused IS NULL OR j.queue_name <> ALL (paused))
                   AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                   AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                 ORDER BY j.priority DESC, j.id ASC
                 LIMIT max_jobs
                 FOR UPDATE OF j SKIP LOCKED) AS b1
                UNION ALL
                SELECT b2.* FROM (SELECT j.id
                 FROM procrastinate_jobs AS j
                 WHERE target_queue_names IS NULL AND floored
                   AND j.status = 'todo' AND j.priority > floor_priority
                   AND (paused IS NULL OR j.queue_name <> ALL (paused))
                   AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                   AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                 ORDER BY j.priority DESC, j.id ASC
                 LIMIT max_jobs
                 FOR UPDATE OF j SKIP LOCKED) AS b2
                UNION ALL
                SELECT b3.* FROM (SELECT j.id
                 FROM procrastinate_jobs AS j
                 WHERE target_queue_names IS NULL AND floored
                   AND j.status = 'todo' AND j.priority = floor_priority AND j.id >= floor_id
                   AND (paused IS NULL OR j.queue_name <> ALL (paused))
                   AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                   AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                 ORDER BY j.priority DESC, j.id ASC
                 LIMIT max_jobs
                 FOR UPDATE OF j SKIP LOCKED) AS b3
                UNION ALL
                SELECT b4.* FROM (SELECT j.id
                 FROM procrastinate_jobs AS j
                 WHERE target_queue_names IS NULL AND floored
                   AND j.status = 'todo' AND j.priority < floor_priority
                   AND (paused IS NULL OR j.queue_name <> ALL (paused))
                   AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                   AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                 ORDER BY j.priority DESC, j.id ASC
                 LIMIT max_jobs
                 FOR UPDATE OF j SKIP LOCKED) AS b4
            ) AS part
            LIMIT max_jobs
        ) AS every_queue
        UNION ALL
        -- Listed queues: each queue's first jobs in the per-queue index's
        -- order (from the floor on, in the same parts), then the first of
        -- all of them. Jobs locked here beyond max_jobs are released when
        -- the claim commits.
        SELECT listed.id
        FROM (
            SELECT one_queue.id
            FROM (SELECT DISTINCT q.name
                  FROM unnest(target_queue_names) AS q(name)
                  WHERE paused IS NULL OR q.name <> ALL (paused)) AS queue
            CROSS JOIN LATERAL (
                SELECT part.id, part.priority FROM (
                    SELECT b5.* FROM (SELECT j.id, j.priority
                     FROM procrastinate_jobs AS j
                     WHERE NOT floored
                       AND j.status = 'todo' AND j.queue_name = queue.name
                       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                       AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                     ORDER BY j.priority DESC, j.id ASC
                     LIMIT max_jobs
                     FOR UPDATE OF j SKIP LOCKED) AS b5
                    UNION ALL
                    SELECT b6.* FROM (SELECT j.id, j.priority
                     FROM procrastinate_jobs AS j
                     WHERE floored
                       AND j.status = 'todo' AND j.queue_name = queue.name
                       AND j.priority > floor_priority
                       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                       AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                     ORDER BY j.priority DESC, j.id ASC
                     LIMIT max_jobs
                     FOR UPDATE OF j SKIP LOCKED) AS b6
                    UNION ALL
                    SELECT b7.* FROM (SELECT j.id, j.priority
                     FROM procrastinate_jobs AS j
                     WHERE floored
                       AND j.status = 'todo' AND j.queue_name = queue.name
                       AND j.priority = floor_priority AND j.id >= floor_id
                       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                       AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                     ORDER BY j.priority DESC, j.id ASC
                     LIMIT max_jobs
                     FOR UPDATE OF j SKIP LOCKED) AS b7
                    UNION ALL
                    SELECT b8.* FROM (SELECT j.id, j.priority
                     FROM procrastinate_jobs AS j
                     WHERE floored
                       AND j.status = 'todo' AND j.queue_name = queue.name
                       AND j.priority < floor_priority
                       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                       AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                     ORDER BY j.priority DESC, j.id ASC
                     LIMIT max_jobs
                     FOR UPDATE OF j SKIP LOCKED) AS b8
                ) AS part
                LIMIT max_jobs
            ) AS one_queue
            WHERE target_queue_names IS NOT NULL
            ORDER BY one_queue.priority DESC, one_queue.id ASC
            LIMIT max_jobs
        ) AS listed
    ), claimed AS (
        -- clock_timestamp(), not now(): the snapshot that saw the previous
        -- job of a lock finish is taken after the transaction started, so
        -- now() could precede that job's finished_at and show two jobs of one
        -- lock overlapping when they did not. The ids as an array: a
        -- generic plan cannot know how many there are, and probing the
        -- primary key for each is right for any claim size.
        UPDATE procrastinate_jobs AS j
        SET status = 'doing',
            worker_id = p_worker_id,
            started_at = clock_timestamp(),
            finished_at = NULL
        WHERE j.id = ANY (ARRAY(SELECT claimable.id FROM claimable))
        RETURNING j
    )
    -- Each job's trace context probed by its key, for the same reason.
    SELECT with_context.j, (with_context.context).traceparent, (with_context.context).tracestate
    FROM (
        SELECT claimed.j,
               (SELECT context FROM dawdle_job_trace_contexts AS context
                WHERE context.job_id = (claimed.j).id) AS context
        FROM claimed
        OFFSET 0
    ) AS with_context;
END;
$$;

-- Without a floor, as every claimer but dawdle's own worker calls it (the
-- Python library's fetch reaches it through dawdle_fetch_jobs_v1).
CREATE OR REPLACE FUNCTION dawdle_claim_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS TABLE (job procrastinate_jobs, traceparent text, tracestate text)
LANGUAGE sql AS $$
    SELECT * FROM dawdle_claim_jobs_v2(target_queue_names, p_worker_id, max_jobs, NULL, NULL);
$$;
