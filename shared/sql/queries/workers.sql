-- Named queries of the queue's worker registry (echo/work/workers.py: WorkerRegistry).
-- Each starts with `-- name: <name>`. The table is 020_task_workers.sql.

-- name: register
-- A worker is here (again): its row, its serving, the time it was last seen.
INSERT INTO task_workers (worker, roles, task_types) VALUES ($1, $2::text[], $3::text[])
ON CONFLICT (worker) DO UPDATE
SET roles = excluded.roles, task_types = excluded.task_types, seen_at = now();

-- name: forget
DELETE FROM task_workers WHERE worker = $1;

-- name: live
-- The standalone workers seen within $1 seconds.
SELECT worker, roles, task_types FROM task_workers
WHERE seen_at > now() - make_interval(secs => $1)
ORDER BY worker;

-- name: pending_kinds
-- The pending tasks by role and type: what `status` checks against the live claimers.
SELECT assigned_role, task_type, count(*) AS n FROM agent_tasks
WHERE status = 'pending'
GROUP BY assigned_role, task_type
ORDER BY assigned_role NULLS FIRST, task_type;
