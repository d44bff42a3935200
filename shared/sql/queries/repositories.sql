-- Named queries of the repositories and the merge queue (echo/work/workspaces/store.py).
-- The tables and their audit triggers live in 022_repositories.sql.

-- name: set_actor
SELECT set_config('echo.actor', $1, true);

-- name: add
INSERT INTO repositories (name, source, base_branch, test_command, push, require_approval)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: get
SELECT name, source, base_branch, test_command, push, require_approval, created_at, updated_at
FROM repositories WHERE name = $1;

-- name: list
SELECT name, source, base_branch, test_command, push, require_approval, created_at, updated_at
FROM repositories ORDER BY name;

-- name: remove
DELETE FROM repositories WHERE name = $1 RETURNING name;

-- name: candidates
-- Completed tasks of repository $1 whose branch has a commit the queue has not taken
-- up yet (a retry that made a new head is a new candidate), oldest first.
SELECT t.task_id, t.assigned_role, t.task_description,
       coalesce((t.payload ->> 'merge_attempts')::int, 0) AS merge_attempts,
       t.result -> 'workspace' ->> 'branch' AS branch,
       t.result -> 'workspace' ->> 'head' AS head
FROM agent_tasks AS t
LEFT JOIN repository_merges AS m ON m.task_id = t.task_id
WHERE t.status = 'completed'
  AND t.payload -> 'repo' ->> 'name' = $1
  AND coalesce((t.result -> 'workspace' ->> 'changed')::boolean, false)
  AND (m.task_id IS NULL OR (m.head <> t.result -> 'workspace' ->> 'head'
                             AND m.status <> 'merging'))
ORDER BY t.task_id;

-- name: start_merge
INSERT INTO repository_merges AS m (task_id, repo, branch, head, status)
VALUES ($1, $2, $3, $4, 'merging')
ON CONFLICT (task_id) DO UPDATE
SET head = excluded.head, status = 'merging', reason = NULL, merged_commit = NULL,
    updated_at = now();

-- name: finish_merge
UPDATE repository_merges SET status = $2, reason = $3, merged_commit = $4, updated_at = now()
WHERE task_id = $1;

-- name: send_back
-- A completed task whose branch the queue could not merge goes back to the queue, with
-- the reason in its payload for its next run ($2) and its send-backs counted ($3).
-- The task trigger writes `task.requeued`.
UPDATE agent_tasks
SET status = 'pending', run_after = now(), assigned_worker_id = NULL,
    payload = payload || jsonb_build_object('merge_failure', $2::text, 'merge_attempts', $3::int)
WHERE task_id = $1 AND status = 'completed'
RETURNING task_id;

-- name: merges
SELECT task_id, repo, branch, head, status, reason, merged_commit, created_at, updated_at
FROM repository_merges WHERE repo = $1 ORDER BY task_id DESC LIMIT $2;

-- name: task_states
-- The status and finish time of each task id in $1 (gc: which worktrees may go).
SELECT task_id, status, completed_at FROM agent_tasks WHERE task_id = ANY($1::bigint[]);

-- name: task_workspace
SELECT task_id, assigned_role, payload -> 'repo' AS repo, result -> 'workspace' AS workspace
FROM agent_tasks WHERE task_id = $1;
