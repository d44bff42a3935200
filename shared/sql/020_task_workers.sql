-- 020: the queue's live workers (issue 18, item 7). A pending task nobody can claim
-- waited forever, silently: a task without a role is claimed only by a worker with no
-- role filter (`echoctl worker`), and the agents claim only their own role's tasks.
-- Each running pool (an agent's, `echoctl worker`'s) keeps a row here while it runs
-- (seen_at renewed, the row deleted on a clean stop), so a reader can say why a task
-- waits. A killed worker's row goes stale and stops counting; the row is only a hint
-- for people, never a lock.

CREATE TABLE task_workers (
    worker     text PRIMARY KEY,                -- the pool's worker prefix (host:pid...)
    roles      text[],                          -- NULL: every role, and tasks without one
    task_types text[] NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
