-- Named queries of the repositories and the merge queue (echo/work/workspaces/store.py).
-- The tables and their audit triggers live in 022_repositories.sql.

-- name: set_actor
SELECT set_config('echo.actor', $1, true);

-- name: add
INSERT INTO repositories (name, source, base_branch, test_command, push)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: get
SELECT name, source, base_branch, test_command, push, created_at, updated_at
FROM repositories WHERE name = $1;

-- name: list
SELECT name, source, base_branch, test_command, push, created_at, updated_at
FROM repositories ORDER BY name;

-- name: remove
DELETE FROM repositories WHERE name = $1 RETURNING name;

-- name: candidates
-- Completed tasks of repository $1 whose branch has a commit the queue has not taken
-- up yet (a retry that made a new head is a new candidate), oldest first.
SELECT t.task_id, t.assigned_role, t.task_description,
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

-- name: merges
SELECT task_id, repo, branch, head, status, reason, merged_commit, created_at, updated_at
FROM repository_merges WHERE repo = $1 ORDER BY task_id DESC LIMIT $2;

-- name: task_states
-- The status and finish time of each task id in $1 (gc: which worktrees may go).
SELECT task_id, status, completed_at FROM agent_tasks WHERE task_id = ANY($1::bigint[]);

-- name: task_workspace
SELECT task_id, assigned_role, payload -> 'repo' AS repo, result -> 'workspace' AS workspace
FROM agent_tasks WHERE task_id = $1;
