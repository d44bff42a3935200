-- Named queries of the queue's worker registry (echo/work/workers.py: WorkerRegistry).
-- Each starts with `-- name: <name>`. The table is 020_task_workers.sql.

-- name: register
-- A worker is here (again): its row, its serving, the time it was last seen.
-- $4 its place (029): where it keeps worktrees.
INSERT INTO task_workers (worker, roles, task_types, place)
VALUES ($1, $2::text[], $3::text[], $4::text)
ON CONFLICT (worker) DO UPDATE
SET roles = excluded.roles, task_types = excluded.task_types, place = excluded.place,
    seen_at = now();

-- name: forget
DELETE FROM task_workers WHERE worker = $1;

-- name: live
-- The standalone workers seen within $1 seconds.
SELECT worker, roles, task_types, place FROM task_workers
WHERE seen_at > now() - make_interval(secs => $1)
ORDER BY worker;

-- name: pending_kinds
-- The pending tasks by role and type: what `status` checks against the live claimers.
SELECT assigned_role, task_type, workspace_at, count(*) AS n FROM agent_tasks
WHERE status = 'pending'
GROUP BY assigned_role, task_type, workspace_at
ORDER BY assigned_role NULLS FIRST, task_type, workspace_at NULLS FIRST;
