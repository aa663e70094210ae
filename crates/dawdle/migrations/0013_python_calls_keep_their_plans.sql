-- dawdle migration 0013: the functions the Python library calls for every
-- job keep their plans for the session.
--
-- A SQL-language function that PostgreSQL cannot inline (an INSERT in a
-- CTE; a volatile set-returning function) has its body parsed and planned
-- afresh on every call; a PL/pgSQL function's statements are planned once
-- per session. Three such SQL functions sat on the Python library's path,
-- once per job:
--
-- * procrastinate_defer_jobs_v1, its defer, usually one job per call, one
--   call per web request;
-- * dawdle_fetch_jobs_v1 and dawdle_claim_jobs_v1, the two wrappers between
--   its fetch (procrastinate_fetch_job_v2, one job per call) and the claim,
--   dawdle_claim_jobs_v2.
--
-- Measured with pgbench, one session, one job per transaction, synchronous
-- commit off (so that the server's work shows, not the WAL flush), on
-- 190,000 waiting jobs: a defer took 0.36 to 0.45 ms before and 0.17 to
-- 0.22 ms after, level with Procrastinate's own schema; a fetch took 0.54 to
-- 0.58 ms through the wrappers against 0.39 to 0.42 ms for the claim they
-- wrap.
--
-- Parameters, results and behaviour are unchanged. Defer: rows go in in
-- array order (ids ascend in array order), a missing priority is 0, missing
-- args are an empty object, the ids come back in order, and a second
-- waiting job of a queueing lock fails with the unique violation on
-- procrastinate_jobs_queueing_lock_idx_v1 that the Python library turns
-- into AlreadyEnqueued. Claim and fetch: dawdle_claim_jobs_v2 without a
-- floor, its jobs as it returns them.
CREATE OR REPLACE FUNCTION procrastinate_defer_jobs_v1(jobs procrastinate_job_to_defer_v1[])
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    WITH inserted AS (
        INSERT INTO procrastinate_jobs
            (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
        SELECT j.queue_name, j.task_name, coalesce(j.priority, 0), j.lock,
               j.queueing_lock, coalesce(j.args, '{}'), j.scheduled_at
        FROM unnest(jobs) WITH ORDINALITY
             AS j (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at, ord)
        ORDER BY j.ord
        RETURNING id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO ids FROM inserted;
    RETURN ids;
END;
$$;

CREATE OR REPLACE FUNCTION dawdle_claim_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS TABLE (job procrastinate_jobs, traceparent text, tracestate text)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM dawdle_claim_jobs_v2(target_queue_names, p_worker_id, max_jobs, NULL, NULL);
END;
$$;

CREATE OR REPLACE FUNCTION dawdle_fetch_jobs_v1(
    target_queue_names varchar[],
    p_worker_id bigint,
    max_jobs integer
) RETURNS SETOF procrastinate_jobs
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT (claimed.job).*
    FROM dawdle_claim_jobs_v1(target_queue_names, p_worker_id, max_jobs) AS claimed;
END;
$$;
