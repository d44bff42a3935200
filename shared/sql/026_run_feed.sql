-- 026: the console sees Claude runs start and end, and a workflow names its repository.
--
-- A task's Claude run starts when its session is recorded (the CLI's `init`: a row of
-- claude_sessions, 018) and ends when its ledger row is written (claude_runs, with
-- the task's result or failure, 010). Each writes its agent_actions row in the same
-- statement, by the triggers below, so the audit log (the console's feed, 013) says
-- `run.started` (role, attempt, the attempt it resumed) and `run.ended` (outcome,
-- cost, turns), and the NOTIFY that already goes with every audit row wakes the
-- console. Workflow questions (ledger rows without a task) are not announced: a
-- workflow's own events say what it does.
--
-- workflows.repo: the repository a workflow's decision works in (`workflow start
-- --repo NAME`), as a task's payload names it (echo/org/repos.py `as_payload`); the
-- tasks the decision creates carry it.

ALTER TABLE workflows ADD COLUMN repo jsonb;

CREATE FUNCTION claude_sessions_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN  -- an upsert that only updated
        RETURN NULL;
    END IF;
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    SELECT coalesce(t.assigned_role, n.worker_id), 'run.started', 'run', n.task_id::text,
           jsonb_strip_nulls(jsonb_build_object(
               'task_id', n.task_id, 'role', t.assigned_role, 'attempt', n.attempt,
               'resumed_attempt', n.resumed_attempt, 'session_id', n.session_id,
               'worker', n.worker_id, 'description', left(t.task_description, 120)))
    FROM new_rows AS n
    LEFT JOIN agent_tasks AS t ON t.task_id = n.task_id
    ORDER BY n.task_id, n.attempt;
    RETURN NULL;
END $$;

CREATE TRIGGER claude_sessions_announce AFTER INSERT ON claude_sessions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION claude_sessions_announce();

CREATE FUNCTION claude_runs_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The claim statement's ledger part usually inserts nothing (023): then do nothing.
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE task_id IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    SELECT coalesce(n.role, 'system'), 'run.ended', 'run', n.task_id::text,
           jsonb_strip_nulls(jsonb_build_object(
               'task_id', n.task_id, 'role', n.role, 'attempt', n.attempt,
               'outcome', n.outcome, 'cost_usd', n.cost_usd, 'turns', n.turns,
               'duration_ms', n.duration_ms, 'resumed_attempt', n.resumed_attempt,
               'session_id', n.session_id, 'workflow', n.workflow_id))
    FROM new_rows AS n
    WHERE n.task_id IS NOT NULL
    ORDER BY n.run_id;
    RETURN NULL;
END $$;

CREATE TRIGGER claude_runs_announce AFTER INSERT ON claude_runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION claude_runs_announce();

-- The console's chart of tasks finished per minute reads the last hour's endings.
CREATE INDEX agent_tasks_completed_idx ON agent_tasks (completed_at) WHERE completed_at IS NOT NULL;
