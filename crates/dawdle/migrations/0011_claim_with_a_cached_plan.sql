-- dawdle migration 0011: a claim whose plan is made once per session and
-- never sorts a queue's backlog.
--
-- Until now the claim's query was planned afresh on every call (about half
-- a millisecond, more than the claim itself for a single job): its generic
-- plan turned the "is this job's lock busy?" test into a hashed scan of
-- every running job, so PostgreSQL's plan cache kept choosing custom plans.
-- And a claim for listed queues (`queue_name = ANY (...)`) read the queues'
-- whole backlog through the per-queue index and sorted it, since an index
-- scan over several values of its leading column is not in index order: a
-- cost that grew with the backlog.
--
-- Now:
-- * the lock test is a function of its own, probing the lock indexes for one
--   job at a time, whatever the plan around it;
-- * listed queues are read one queue at a time, each in index order (an
--   equality on the leading column), at most max_jobs per queue, and the
--   results merged: the work is bounded by the claim's size, not the
--   backlog's;
-- * both cases are branches of one statement, only one of which runs, and
--   the function forces the generic plan (and no JIT, whose compilation
--   would cost more than any claim), so the plan is made at a session's
--   first claim and reused;
-- * sorting is off for the function: whatever the statistics say (a
--   bloated claim index, estimates of a handful of waiting jobs), the jobs
--   are read in an index's order, never read in full and sorted. The only
--   sort left is the merge of the listed queues' first jobs, at most
--   max_jobs per queue.

-- Whether the job (`p_lock`, `p_priority`, `p_id`) may run now as far as its
-- lock goes: no job of the lock is running, and no earlier job of the lock
-- (higher priority, or same priority and smaller id) is waiting. Stable: it
-- reads with the snapshot of the claim that calls it.
CREATE FUNCTION dawdle_lock_is_free_v1(p_lock text, p_priority integer, p_id bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN NOT EXISTS (
               SELECT 1 FROM procrastinate_jobs AS running
               WHERE running.lock = p_lock AND running.status = 'doing')
           AND NOT EXISTS (
               SELECT 1 FROM procrastinate_jobs AS earlier
               WHERE earlier.lock = p_lock
                 AND earlier.status = 'todo'
                 AND earlier.lock IS NOT NULL
                 AND (earlier.priority > p_priority
                      OR (earlier.priority = p_priority AND earlier.id < p_id)));
END;
$$;

CREATE OR REPLACE FUNCTION dawdle_claim_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS TABLE (job procrastinate_jobs, traceparent text, tracestate text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
SET enable_sort = off
AS $$
DECLARE
    paused varchar[];
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
        -- Every queue: the claim order index, in order.
        SELECT every_queue.id
        FROM (
            SELECT j.id
            FROM procrastinate_jobs AS j
            WHERE target_queue_names IS NULL
              AND j.status = 'todo'
              AND (paused IS NULL OR j.queue_name <> ALL (paused))
              AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
              AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
            ORDER BY j.priority DESC, j.id ASC
            LIMIT max_jobs
            FOR UPDATE OF j SKIP LOCKED
        ) AS every_queue
        UNION ALL
        -- Listed queues: each queue's first jobs in the per-queue index's
        -- order, then the first of all of them. Jobs locked here beyond
        -- max_jobs are released when the claim commits.
        SELECT listed.id
        FROM (
            SELECT one_queue.id
            FROM (SELECT DISTINCT q.name
                  FROM unnest(target_queue_names) AS q(name)
                  WHERE paused IS NULL OR q.name <> ALL (paused)) AS queue
            CROSS JOIN LATERAL (
                SELECT j.id, j.priority
                FROM procrastinate_jobs AS j
                WHERE j.status = 'todo'
                  AND j.queue_name = queue.name
                  AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                  AND (j.lock IS NULL OR dawdle_lock_is_free_v1(j.lock, j.priority, j.id))
                ORDER BY j.priority DESC, j.id ASC
                LIMIT max_jobs
                FOR UPDATE OF j SKIP LOCKED
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
