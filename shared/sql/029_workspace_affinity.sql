-- 029: a task's worktree stays where it is (issue 22, item 4). A task in a repository
-- added without `--push` keeps its work in the worktree of the machine that ran it (no
-- branch leaves that machine), so a retry anywhere else would start over from the base
-- and silently drop it. The claim that first takes such a task records where its
-- worktree is (`workspace_at`: the worker's place, "<node>:<state dir>"), and from then
-- on only a worker of that place claims it. A repository with `--push` is never pinned:
-- every attempt pushes its branch, and any machine goes on from it.
--
-- `task_workers.place` is each live pool's place, so a pending task pinned to a place
-- where no worker runs can say so (echo.work.workers.unserved). `tasks retry ID
-- --anywhere` lets the operator unpin one (its retry then starts from the base).

ALTER TABLE agent_tasks ADD COLUMN workspace_at text;
ALTER TABLE task_workers ADD COLUMN place text;

DROP FUNCTION agent_tasks_claimable(text[], text[], integer, text[], jsonb, text[], text, jsonb);

-- 010's function plus `here`: a pinned task is claimable only from its place (a NULL
-- `here`, a caller that keeps no worktrees, claims only unpinned tasks).
CREATE FUNCTION agent_tasks_claimable(types text[], roles text[], n integer,
                                      governed text[], lefts jsonb, paused text[],
                                      account text, role_accounts jsonb, here text)
RETURNS SETOF bigint
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT task_id FROM agent_tasks
    WHERE status = 'pending' AND run_after <= now()
      AND task_type = ANY(types)
      AND (roles IS NULL OR assigned_role = ANY(roles))
      AND (workspace_at IS NULL OR workspace_at = here)
      AND (task_type <> ALL(governed)
           OR claude_may_start(lefts, paused, assigned_role, payload ->> 'workflow',
                               coalesce(role_accounts ->> assigned_role, account)))
    ORDER BY task_priority DESC, task_id
    LIMIT n
    FOR UPDATE SKIP LOCKED
$$;
