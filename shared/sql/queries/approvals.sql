-- The approvals store (echo/work/approvals/store.py); the table is 024_approvals.sql.
-- $clock parameters: NULL is the database's now() (tests pass their own).

-- name: expire_task
-- A task's pending requests past their time: expired (a denial with reason "expired").
UPDATE approvals SET state = 'expired', reason = 'expired', decided_at = now(),
       decided_by = 'system'
WHERE task_id = $1 AND state = 'pending' AND expires_at <= coalesce($2::timestamptz, now());

-- name: find_call
-- The latest request of this tool call not yet used: by its tool_use id, else by the
-- session, the tool and the input (a CLI that gave the call a new id on resume).
SELECT * FROM approvals
WHERE task_id = $1 AND kind = 'tool' AND state <> 'used'
  AND (tool_use_id = $2 OR (session_id = $3 AND tool_name = $4 AND input_hash = $5))
ORDER BY (tool_use_id = $2) DESC, id DESC
LIMIT 1;

-- name: insert_call
INSERT INTO approvals (kind, role, task_id, tool_name, input, input_hash, session_id,
                       tool_use_id, expires_at)
VALUES ('tool', $1, $2, $3, $4::jsonb, $5, $6, $7,
        coalesce($9::timestamptz, now()) + make_interval(secs => $8))
ON CONFLICT (task_id, tool_use_id) WHERE tool_use_id IS NOT NULL DO NOTHING
RETURNING *;

-- name: use
-- An approved call runs once: the hook takes the approval as it lets the call through.
UPDATE approvals SET state = 'used' WHERE id = $1 AND state = 'approved' RETURNING id;

-- name: decide
-- An operator's decision on a pending request still in time.
UPDATE approvals SET state = $2, reason = $3, decided_by = $4, decided_at = now()
WHERE id = $1 AND state = 'pending' AND expires_at > coalesce($5::timestamptz, now())
RETURNING *;

-- name: expire_one
UPDATE approvals SET state = 'expired', reason = 'expired', decided_at = now(),
       decided_by = 'system'
WHERE id = $1 AND state = 'pending' AND expires_at <= coalesce($2::timestamptz, now())
RETURNING id;

-- name: wake_task
-- The decided request's task runs again (its next attempt resumes the session) once
-- none of its requests is pending.
UPDATE agent_tasks AS t SET status = 'pending', run_after = now()
WHERE t.task_id = $1 AND t.status = 'awaiting_approval'
  AND NOT EXISTS (SELECT 1 FROM approvals AS a WHERE a.task_id = t.task_id AND a.state = 'pending')
RETURNING t.task_id;

-- name: sweep
-- Every worker's backstop, with its rescue: requests past their time expire, and a task
-- awaiting approval with no pending request left (decided while its run was still
-- being stored) is queued again.
WITH expired AS (
    UPDATE approvals SET state = 'expired', reason = 'expired', decided_at = now(),
           decided_by = 'system'
    WHERE state = 'pending' AND expires_at <= coalesce($1::timestamptz, now())
    RETURNING id, task_id
)
UPDATE agent_tasks AS t SET status = 'pending', run_after = now()
WHERE t.status = 'awaiting_approval'
  AND NOT EXISTS (SELECT 1 FROM approvals AS a
                  WHERE a.task_id = t.task_id AND a.state = 'pending'
                    AND a.id NOT IN (SELECT id FROM expired))
RETURNING t.task_id;

-- name: get
SELECT * FROM approvals WHERE id = $1;

-- name: list
SELECT * FROM approvals
WHERE ($1::text IS NULL OR state = $1) AND ($2::bigint IS NULL OR task_id = $2)
ORDER BY id DESC
LIMIT $3;

-- name: of_task
SELECT * FROM approvals WHERE task_id = $1 ORDER BY id;

-- name: history
SELECT at, actor, action, details FROM agent_actions
WHERE subject_type = 'approval' AND subject_id = $1::text
ORDER BY id;

-- name: merge_request
-- The merge queue's request for a task's branch: the live one, else the latest.
SELECT * FROM approvals WHERE task_id = $1 AND kind = 'merge'
ORDER BY (state IN ('pending', 'approved')) DESC, id DESC
LIMIT 1;

-- name: insert_merge
INSERT INTO approvals (kind, role, task_id, input, expires_at)
VALUES ('merge', $1, $2, $3::jsonb, coalesce($5::timestamptz, now()) + make_interval(secs => $4))
ON CONFLICT (task_id) WHERE kind = 'merge' AND state IN ('pending', 'approved') DO NOTHING
RETURNING *;

-- name: insert_budget
-- A role asks for a higher daily budget ($2: {"role", "daily_usd", "reason"}).
INSERT INTO approvals (kind, role, input, expires_at)
VALUES ('budget', $1, $2::jsonb, coalesce($4::timestamptz, now()) + make_interval(secs => $3))
RETURNING *;

-- name: supersede
-- A live merge request about an earlier commit of the task: a new commit asks again.
UPDATE approvals SET state = 'expired', reason = 'superseded by a newer commit',
       decided_at = now(), decided_by = 'system'
WHERE id = $1 AND state IN ('pending', 'approved');

-- name: set_actor
SELECT set_config('echo.actor', $1, true);
