-- dawdle migration 0002: a job refers to its worker only while it runs.
--
-- Procrastinate leaves worker_id on finished jobs until the worker row is
-- deleted, which makes unregistering a worker that ran ten million jobs an
-- update of ten million rows. Here worker_id is cleared when a job leaves
-- `doing`, so deleting a worker only unlinks its running jobs (what stalled
-- job recovery looks for), through an index of running jobs.

DROP INDEX dawdle_jobs_worker_id_idx;
-- Running jobs by worker: unlinking a deleted worker's jobs, and finding
-- running jobs whose worker is gone (worker_id null or no such worker).
CREATE INDEX dawdle_jobs_running_idx
    ON procrastinate_jobs (worker_id) WHERE status = 'doing';

CREATE OR REPLACE FUNCTION dawdle_workers_after_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE procrastinate_jobs AS job
    SET worker_id = NULL
    FROM deleted_workers AS worker
    WHERE job.status = 'doing' AND job.worker_id = worker.id;
    RETURN NULL;
END;
$$;

-- The timestamp trigger also clears worker_id of a job leaving `doing`
-- when the statement did not (the Python library's updates, psql).
CREATE OR REPLACE FUNCTION dawdle_jobs_timestamps_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'todo' THEN
        NEW.started_at := NULL;
        NEW.finished_at := NULL;
        -- An abort request belongs to the attempt that was running; a job put
        -- back to todo by hand (the runbook's "reset a stuck job") starts afresh.
        IF OLD.status <> 'todo' THEN
            NEW.abort_requested := false;
        END IF;
    ELSIF NEW.status = 'doing' THEN
        IF OLD.status <> 'doing' AND NEW.started_at IS NOT DISTINCT FROM OLD.started_at THEN
            NEW.started_at := now();
        END IF;
        NEW.finished_at := NULL;
    ELSIF NEW.status <> OLD.status AND NEW.finished_at IS NOT DISTINCT FROM OLD.finished_at THEN
        NEW.finished_at := now();
    END IF;
    IF NEW.status <> 'doing' THEN
        NEW.worker_id := NULL;
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER dawdle_jobs_timestamps_v1 ON procrastinate_jobs;
CREATE TRIGGER dawdle_jobs_timestamps_v1
    BEFORE UPDATE ON procrastinate_jobs
    FOR EACH ROW
    WHEN (
        (NEW.status = 'todo'
         AND (NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL
              OR (NEW.abort_requested AND OLD.status <> 'todo')))
        OR (NEW.status = 'doing'
            AND (NEW.finished_at IS NOT NULL
                 OR (OLD.status <> 'doing' AND NEW.started_at IS NOT DISTINCT FROM OLD.started_at)))
        OR (NEW.status NOT IN ('todo', 'doing') AND NEW.status <> OLD.status
            AND NEW.finished_at IS NOT DISTINCT FROM OLD.finished_at)
        OR (NEW.status <> 'doing' AND NEW.worker_id IS NOT NULL)
    )
    EXECUTE FUNCTION dawdle_jobs_timestamps_v1();

-- Jobs finished before this migration.
UPDATE procrastinate_jobs SET worker_id = NULL
WHERE status NOT IN ('todo', 'doing') AND worker_id IS NOT NULL;
