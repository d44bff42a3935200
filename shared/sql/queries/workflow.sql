-- Named queries of the collaborative workflow (echo/org/workflow/store.py: WorkflowStore). Each starts with
-- `-- name: <name>`. Audit rows are written by the triggers of 006_workflow.sql.

-- name: set_actor
SELECT set_config('echo.actor', $1, true);

-- name: live_roles
-- The agents that are up now: asked to self-select when a workflow starts.
SELECT role FROM agent_health
WHERE state <> 'down' AND last_heartbeat > now() - make_interval(secs => $1)
ORDER BY role;

-- name: create
INSERT INTO workflows (subject, body, started_by, roles, rounds, quorum, decider_timeout,
                       phase_timeout, phase_deadline, repo)
VALUES ($1, $2, $3, $4::text[], $5, $6, $7, $8, now() + make_interval(secs => $8), $9::jsonb)
RETURNING id;

-- name: set_message
UPDATE workflows SET message_id = $2 WHERE id = $1;

-- name: open
SELECT *, phase_deadline <= now() AS overdue FROM workflows
WHERE phase NOT IN ('done', 'cancelled', 'error') ORDER BY id;

-- name: get
SELECT *, phase_deadline <= now() AS overdue FROM workflows WHERE id = $1;

-- name: list
SELECT * FROM workflows ORDER BY created_at DESC LIMIT $1;

-- name: advance
-- Guarded: only from the (phase, round) the driver read, so a retried or concurrent
-- transition changes nothing the second time.
UPDATE workflows
SET phase = $4, round = $5, consensus = coalesce($6, consensus), updated_at = now(),
    phase_deadline = now() + make_interval(secs => phase_timeout),
    finished_at = CASE WHEN $4 = 'done' THEN now() END
WHERE id = $1 AND phase = $2 AND round = $3
RETURNING id;

-- name: cancel
-- An operator stops an unfinished workflow; returns the phase it had (no row: it was
-- finished already, or does not exist).
UPDATE workflows AS w SET phase = 'cancelled', updated_at = now(), finished_at = now()
FROM (SELECT id, phase FROM workflows WHERE id = $1 FOR UPDATE) AS before
WHERE w.id = before.id AND before.phase NOT IN ('done', 'cancelled', 'error')
RETURNING before.phase;

-- name: mark_error
-- A permanent error in this workflow's step (011_failure_model.sql): it leaves the open
-- set with the reason. Guarded like `advance`: only from the phase the agent read.
UPDATE workflows
SET phase = 'error', error = $3, updated_at = now(), finished_at = now()
WHERE id = $1 AND phase = $2
RETURNING id;

-- name: record_participant
INSERT INTO workflow_participants (workflow_id, role, participate, confidence, reason,
                                   decider, fallback_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING;

-- name: participants
SELECT * FROM workflow_participants WHERE workflow_id = $1 ORDER BY decided_at, role;

-- name: thread
SELECT id, uuid, channel, kind, from_role, to_role, thread_id, subject, body,
       created_at, published_at
FROM messages WHERE thread_id = $1 ORDER BY id;

-- name: message_exists
SELECT EXISTS (SELECT 1 FROM messages WHERE uuid = $1);

-- name: insert_decision
INSERT INTO decisions (workflow_id, decided_by, outcome, consensus, summary, source,
                       fallback_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (workflow_id) DO NOTHING;

-- name: decision_of
SELECT * FROM decisions WHERE workflow_id = $1;

-- name: set_decision_tasks
UPDATE decisions SET tasks = $2::jsonb WHERE id = $1;

-- name: decisions
SELECT d.*, w.subject FROM decisions AS d JOIN workflows AS w ON w.id = d.workflow_id
ORDER BY d.id DESC LIMIT $1;

-- name: tasks_by_key
SELECT task_id, dedupe_key FROM agent_tasks WHERE dedupe_key = ANY($1::text[]);

-- name: tasks
SELECT task_id, assigned_role, task_description, status, result, error, completed_at
FROM agent_tasks WHERE task_id = ANY($1::bigint[]) ORDER BY task_id;

-- name: actions
SELECT at, actor, action, details FROM agent_actions
WHERE subject_type = 'workflow' AND subject_id = $1 ORDER BY id;

-- name: proposal
-- The workflow's start broadcast (the first message of its thread) and the roles that
-- processed it (agent_inbox): what `echoctl train` checks about delivery.
SELECT m.id, m.published_at,
       coalesce(array_agg(i.role ORDER BY i.role) FILTER (WHERE i.role IS NOT NULL), '{}') AS reached
FROM (SELECT id, published_at FROM messages WHERE thread_id = $1 ORDER BY id LIMIT 1) AS m
LEFT JOIN agent_inbox AS i ON i.message_id = m.id
GROUP BY m.id, m.published_at;

-- name: conversation
SELECT session_id FROM workflow_sessions WHERE workflow_id = $1 AND role = $2;

-- name: record_conversation
INSERT INTO workflow_sessions (workflow_id, role, session_id) VALUES ($1, $2, $3)
ON CONFLICT (workflow_id, role) DO UPDATE SET session_id = EXCLUDED.session_id, updated_at = now()
WHERE workflow_sessions.session_id <> EXCLUDED.session_id;
