-- 003: the work queue. One row per task; workers claim rows with FOR UPDATE SKIP LOCKED.
--
-- Life of a task:
--   pending --claim--> running --complete--> completed
--                        |-- fail (permanent) --> failed
--                        |-- fail (retryable), lease expired, released on drain --> pending
--                        |-- retries exhausted --> dead
--   pending | running --cancel--> cancelled;   failed | dead --requeue--> pending
--
-- A running row belongs to (assigned_worker_id, attempt). `attempt` grows on every
-- claim, so a worker that lost its lease (rescued, cancelled, claimed again, even by
-- the same slot) matches no row when it tries to complete: completion is exactly once.
--
-- Every status change writes its agent_actions row in the same statement, by the
-- statement-level triggers below, so no code path can forget the audit and a batch of
-- 500 claims costs one audit INSERT. Inserts and rows that become runnable again send
-- one NOTIFY `<schema>:tasks` per statement so idle workers wake at once; cancelling a
-- running task sends `cancel:<task_id>` on the same channel to stop its worker.

CREATE TABLE agent_tasks (
    task_id            bigserial PRIMARY KEY,
    task_type          text NOT NULL DEFAULT 'claude' CHECK (task_type ~ '^[a-z][a-z0-9_]{0,31}$'),
    task_description   text NOT NULL CHECK (task_description <> ''),
    task_priority      integer NOT NULL DEFAULT 0,      -- higher runs first
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'running', 'completed', 'failed',
                                         'cancelled', 'dead')),
    assigned_role      text,                            -- NULL: any worker may run it
    assigned_worker_id text,                            -- host:pid:slot while running
    attempt            integer NOT NULL DEFAULT 0,      -- claims so far: the lease token
    timeout_seconds    integer NOT NULL DEFAULT 300 CHECK (timeout_seconds > 0),
    max_retries        integer NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    retry_count        integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    dedupe_key         text,
    payload            jsonb NOT NULL DEFAULT '{}'::jsonb,  -- argv, prompt, executor options
    run_after          timestamptz NOT NULL DEFAULT now(),
    heartbeat_at       timestamptz,
    lease_expires_at   timestamptz,
    result             jsonb,
    error              text,
    cost_usd           numeric(12, 6),
    session_id         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    duration_sec       double precision
);

-- The claim query walks this index in order and stops after LIMIT rows: it holds only
-- pending rows, so finished history never slows a claim down.
CREATE INDEX agent_tasks_claim_idx ON agent_tasks (task_priority DESC, task_id)
    INCLUDE (run_after, assigned_role, task_type) WHERE status = 'pending';
-- Rescue of expired leases looks at running rows only.
CREATE INDEX agent_tasks_lease_idx ON agent_tasks (lease_expires_at) WHERE status = 'running';
-- At most one live task per dedupe key; a finished task frees its key.
CREATE UNIQUE INDEX agent_tasks_dedupe_idx ON agent_tasks (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running');
-- `echoctl tasks list --status S --role R`.
CREATE INDEX agent_tasks_status_idx ON agent_tasks (status, task_id);

-- Who made a change: the worker for its own claims and results, else whoever set
-- `echo.actor` for the transaction (the CLI, a rescuing worker), else 'system'.
CREATE FUNCTION agent_tasks_actor(worker text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('echo.actor', true), ''), worker, 'system')
$$;

CREATE FUNCTION agent_tasks_insert_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    SELECT agent_tasks_actor(NULL), 'task.enqueued', 'task', n.task_id::text,
           jsonb_build_object('type', n.task_type, 'role', n.assigned_role,
                              'priority', n.task_priority, 'dedupe_key', n.dedupe_key)
    FROM new_rows AS n
    ORDER BY n.task_id;
    PERFORM pg_notify(current_schema() || ':tasks', 'new');
    RETURN NULL;
END $$;

CREATE TRIGGER agent_tasks_insert_audit AFTER INSERT ON agent_tasks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_tasks_insert_audit();

CREATE FUNCTION agent_tasks_update_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    runnable boolean := false;
    cancelled bigint;
BEGIN
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    SELECT CASE WHEN n.status IN ('running', 'completed') AND n.assigned_worker_id IS NOT NULL
                THEN n.assigned_worker_id
                ELSE agent_tasks_actor(o.assigned_worker_id) END,
           'task.' || CASE
               WHEN n.status = 'running' THEN 'claimed'
               WHEN n.status = 'pending' AND o.status = 'running'
                    AND n.retry_count = o.retry_count THEN 'released'
               WHEN n.status = 'pending' AND o.status = 'running' THEN 'retry_scheduled'
               WHEN n.status = 'pending' THEN 'requeued'
               ELSE n.status END,
           'task', n.task_id::text,
           jsonb_strip_nulls(jsonb_build_object(
               'from', o.status, 'attempt', n.attempt, 'retry_count', n.retry_count,
               'worker', coalesce(n.assigned_worker_id, o.assigned_worker_id),
               'run_after', CASE WHEN n.status = 'pending' THEN n.run_after END,
               'error', CASE WHEN n.status IN ('pending', 'failed', 'dead') THEN n.error END,
               'duration_sec', n.duration_sec, 'cost_usd', n.cost_usd))
    FROM new_rows AS n JOIN old_rows AS o USING (task_id)
    WHERE n.status IS DISTINCT FROM o.status
    ORDER BY n.task_id;
    IF FOUND THEN
        SELECT bool_or(n.status = 'pending' AND n.run_after <= now()) INTO runnable
        FROM new_rows AS n JOIN old_rows AS o USING (task_id)
        WHERE n.status IS DISTINCT FROM o.status;
        IF runnable THEN
            PERFORM pg_notify(current_schema() || ':tasks', 'new');
        END IF;
        FOR cancelled IN
            SELECT n.task_id FROM new_rows AS n JOIN old_rows AS o USING (task_id)
            WHERE n.status = 'cancelled' AND o.status = 'running'
        LOOP
            PERFORM pg_notify(current_schema() || ':tasks', 'cancel:' || cancelled);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER agent_tasks_update_audit AFTER UPDATE ON agent_tasks
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_tasks_update_audit();
