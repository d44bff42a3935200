-- Named queries of the work queue (echo/work/queue.py). Each starts with `-- name: <name>`.
-- Tables are unqualified: the connection's search_path is the organisation's namespace.
-- Writes by a worker are guarded by (task_id, assigned_worker_id, attempt): a worker
-- that lost its lease matches no row, so it cannot touch a task someone else owns.

-- name: enqueue
-- A batch in one statement: one transaction, one audit INSERT, one NOTIFY. A dedupe
-- key already held by a live task inserts nothing (the caller looks the owner up).
-- Rows are inserted, and returned, in the order given.
INSERT INTO agent_tasks (task_type, task_description, task_priority, assigned_role,
                         timeout_seconds, max_retries, dedupe_key, payload, run_after)
SELECT t.task_type, t.description, t.priority, t.role, t.timeout, t.max_retries,
       t.dedupe_key, t.payload::jsonb, now() + make_interval(secs => t.delay)
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::int[],
            $7::text[], $8::text[], $9::float8[]) WITH ORDINALITY
     AS t(task_type, description, priority, role, timeout, max_retries, dedupe_key,
          payload, delay, ord)
ORDER BY t.ord
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running', 'awaiting_approval')
DO NOTHING
RETURNING task_id, dedupe_key;

-- name: live_by_dedupe_key
SELECT task_id, dedupe_key FROM agent_tasks
WHERE dedupe_key = ANY($1::text[]) AND status IN ('pending', 'running', 'awaiting_approval');

-- name: heartbeat
-- Extends the leases of the tasks this worker still owns; the ids missing from the
-- answer were rescued or cancelled, and their work must stop.
UPDATE agent_tasks AS t
SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $4::float8)
FROM unnest($1::bigint[], $2::text[], $3::int[]) AS h(task_id, worker, attempt)
WHERE t.task_id = h.task_id AND t.status = 'running'
  AND t.assigned_worker_id = h.worker AND t.attempt = h.attempt
RETURNING t.task_id;

-- name: complete_and_claim
-- The pool's hot path: store finished results ($1-$6) and claim for the free slots
-- ($7-$10, as in `claim`; none when $7 is empty) in ONE statement, so one round trip and
-- one commit serve both. The two UPDATEs touch disjoint rows (running ones are
-- completed, pending ones claimed); the statement-level audit trigger fires once and
-- sees the rows of both in its transition tables. Rows with `completed` true are the
-- results that landed; the others are the claimed tasks. `claim` and `complete` are
-- this statement with nothing to store, or no slot to fill.
-- Capacity-aware: $7 holds one worker id (host:pid:slot) per free slot, so at most
-- that many rows are taken. SKIP LOCKED lets claimers share the queue without waiting.
-- $9 NULL: any role; otherwise only tasks assigned to one of those roles.
-- agent_tasks_claimable (008, 010) walks the claim index in order and locks the rows;
-- they are updated through the primary key (`= ANY`), whatever the statistics say.
-- The governor (010): $11 the ledger rows of the finished runs (JSON, written here, in
-- the same transaction as the results, and counted by the gate), $12 the clock (NULL:
-- the database's), $13 the organisation's time zone, $14 the governed task types, $15
-- the worker's Claude account, $16 {role: account}. A governed task starts only while
-- no budget of its own is spent and its account is not paused; `budget_left_usd` is
-- what is left of the smallest budget that applies (the run's --max-budget-usd).
-- $17 the worker's place (029): it claims only tasks not pinned elsewhere, and pins the
-- task of a repository without `--push` it claims, as its worktree will be here.
WITH ledger AS (
    INSERT INTO claude_runs SELECT * FROM claude_runs_rows($11::jsonb, coalesce($12::timestamptz, now()), $13::text)
), gate AS MATERIALIZED (
    SELECT * FROM claude_gate(coalesce($12::timestamptz, now()), $13::text, $11::jsonb)
    WHERE cardinality($7::text[]) > 0 AND cardinality($14::text[]) > 0
), done AS (
    UPDATE agent_tasks AS t
    SET status = 'completed', result = r.result::jsonb, cost_usd = r.cost,
        session_id = r.session_id, error = NULL, lease_expires_at = NULL,
        completed_at = now(), duration_sec = extract(epoch FROM now() - t.started_at)
    FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::numeric[], $6::text[])
         AS r(task_id, worker, attempt, result, cost, session_id)
    WHERE t.task_id = r.task_id AND t.status = 'running'
      AND t.assigned_worker_id = r.worker AND t.attempt = r.attempt
    RETURNING t.task_id
), locked AS (
    SELECT array_agg(c ORDER BY c) AS ids
    FROM (SELECT 1) AS one LEFT JOIN gate ON true,
         agent_tasks_claimable($8::text[], $9::text[], cardinality($7::text[]),
                               CASE WHEN gate.lefts IS NULL THEN '{}'::text[] ELSE $14::text[] END,
                               gate.lefts, gate.paused, $15::text, $16::jsonb,
                               $17::text) AS c
), claimed AS (
    UPDATE agent_tasks AS t
    SET status = 'running',
        assigned_worker_id = ($7::text[])[array_position(locked.ids, t.task_id)],
        attempt = t.attempt + 1, started_at = now(), heartbeat_at = now(),
        lease_expires_at = now() + make_interval(secs => $10::float8),
        completed_at = NULL, duration_sec = NULL,
        workspace_at = CASE WHEN t.workspace_at IS NULL
                             AND jsonb_typeof(t.payload -> 'repo') = 'object'
                             AND NOT coalesce((t.payload #>> '{repo,push}')::boolean, false)
                            THEN $17::text ELSE t.workspace_at END
    FROM locked
    WHERE t.task_id = ANY(locked.ids)
    RETURNING t.task_id, t.task_type, t.task_description, t.task_priority, t.assigned_role,
              t.assigned_worker_id, t.attempt, t.timeout_seconds, t.max_retries,
              t.retry_count, t.payload, t.started_at
)
SELECT true AS completed, task_id, NULL::text AS task_type, NULL::text AS task_description,
       NULL::integer AS task_priority, NULL::text AS assigned_role,
       NULL::text AS assigned_worker_id, NULL::integer AS attempt,
       NULL::integer AS timeout_seconds, NULL::integer AS max_retries,
       NULL::integer AS retry_count, NULL::jsonb AS payload, NULL::timestamptz AS started_at,
       NULL::float8 AS budget_left_usd
FROM done
UNION ALL
SELECT false, claimed.*,
       CASE WHEN claimed.task_type = ANY($14::text[])
            THEN claude_left(gate.lefts, claimed.assigned_role, claimed.payload ->> 'workflow')::float8
       END
FROM claimed LEFT JOIN gate ON true;

-- name: fail
-- Retryable: back to pending after `delay` seconds (retry_count + 1 when `counted`),
-- or dead once retries are exhausted. Permanent: failed.
-- The governor (010): $10 the ledger rows of the failed runs (JSON), written in this
-- transaction whether or not the task was still ours (the run cost what it cost), with
-- the plan windows they met (an account pause until the reset); $11 the clock (NULL:
-- the database's), $12 the organisation's time zone.
-- $13 awaiting: the run stopped at a tool call that needs approval (024): the task waits
-- as awaiting_approval while a request of it is pending; if every one was decided
-- meanwhile (an operator was quick), it is pending at once (retryable, not counted).
WITH ledger AS (
    INSERT INTO claude_runs SELECT * FROM claude_runs_rows($10::jsonb, coalesce($11::timestamptz, now()), $12::text)
), paused AS (
    SELECT claude_pauses_record($10::jsonb) AS n
)
UPDATE agent_tasks AS t
SET status = CASE WHEN f.awaiting AND EXISTS (
                      SELECT 1 FROM approvals AS a
                      WHERE a.task_id = t.task_id AND a.state = 'pending')
                  THEN 'awaiting_approval'
                  WHEN NOT f.retryable THEN 'failed'
                  WHEN f.counted AND t.retry_count >= t.max_retries THEN 'dead'
                  ELSE 'pending' END,
    retry_count = t.retry_count + CASE
        WHEN f.retryable AND f.counted AND t.retry_count < t.max_retries THEN 1 ELSE 0 END,
    run_after = CASE WHEN f.retryable AND (NOT f.counted OR t.retry_count < t.max_retries)
                     THEN now() + make_interval(secs => f.delay) ELSE t.run_after END,
    assigned_worker_id = CASE WHEN f.retryable AND (NOT f.counted OR t.retry_count < t.max_retries)
                              THEN NULL ELSE t.assigned_worker_id END,
    completed_at = CASE WHEN f.retryable AND (NOT f.counted OR t.retry_count < t.max_retries)
                        THEN NULL ELSE now() END,
    error = f.error, cost_usd = coalesce(f.cost, t.cost_usd),
    session_id = coalesce(f.session_id, t.session_id),
    lease_expires_at = NULL, duration_sec = extract(epoch FROM now() - t.started_at)
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::bool[], $6::bool[],
            $7::float8[], $8::numeric[], $9::text[], $13::bool[])
     AS f(task_id, worker, attempt, error, retryable, counted, delay, cost, session_id,
          awaiting),
     paused
WHERE t.task_id = f.task_id AND t.status = 'running'
  AND t.assigned_worker_id = f.worker AND t.attempt = f.attempt
RETURNING t.task_id, t.status;

-- name: release
-- Graceful drain: work not finished within the grace period goes back untouched
-- (no retry counted) for another worker.
UPDATE agent_tasks AS t
SET status = 'pending', assigned_worker_id = NULL, run_after = now(),
    lease_expires_at = NULL, heartbeat_at = NULL
FROM unnest($1::bigint[], $2::text[], $3::int[]) AS r(task_id, worker, attempt)
WHERE t.task_id = r.task_id AND t.status = 'running'
  AND t.assigned_worker_id = r.worker AND t.attempt = r.attempt
RETURNING t.task_id;

-- name: rescue
-- Running rows whose lease ran out: their worker died or lost the database. Back to
-- pending after the task queue's backoff, or dead. The delay of each row mirrors
-- echo.runtime.Backoff.delay(retry_count), the one formula, from its numbers passed in:
-- $1 initial, $2 factor, $3 max, $4 jitter: min(max, initial * factor^n) * (1 - jitter * u),
-- u uniform in [0, 1) (the exponent capped at 64, as there).
-- One statement, so a cancelled caller can never leave a transaction open: `actor`
-- sets `echo.actor` ($6) for this statement's transaction, where the audit trigger
-- reads it.
WITH actor AS MATERIALIZED (
    SELECT set_config('echo.actor', $6, true) AS name
), expired AS (
    SELECT task_id FROM agent_tasks, actor
    WHERE status = 'running' AND lease_expires_at < now() AND actor.name IS NOT NULL
    ORDER BY lease_expires_at
    LIMIT $5
    FOR UPDATE OF agent_tasks SKIP LOCKED
)
UPDATE agent_tasks AS t
SET status = CASE WHEN t.retry_count >= t.max_retries THEN 'dead' ELSE 'pending' END,
    retry_count = least(t.retry_count + 1, t.max_retries),
    run_after = now() + make_interval(
        secs => least($3::float8, $1::float8 * power($2::float8, least(t.retry_count, 64)))
                 * (1 - $4::float8 * random())),
    error = 'lease expired: worker ' || t.assigned_worker_id || ' stopped heartbeating',
    assigned_worker_id = CASE WHEN t.retry_count >= t.max_retries
                              THEN t.assigned_worker_id END,
    completed_at = CASE WHEN t.retry_count >= t.max_retries THEN now() END,
    lease_expires_at = NULL
FROM expired
WHERE t.task_id = expired.task_id
RETURNING t.task_id, t.status;

-- name: set_actor
SELECT set_config('echo.actor', $1, true);

-- name: cancel
WITH old AS (
    SELECT task_id, status FROM agent_tasks WHERE task_id = $1 FOR UPDATE
)
UPDATE agent_tasks AS t
SET status = 'cancelled', completed_at = now(), lease_expires_at = NULL,
    duration_sec = CASE WHEN old.status = 'running'
                        THEN extract(epoch FROM now() - t.started_at) END
FROM old
WHERE t.task_id = old.task_id AND old.status IN ('pending', 'running', 'awaiting_approval')
RETURNING old.status AS previous;

-- name: requeue
-- $2 anywhere: forget where its worktree is (029), so any worker may take it (from
-- the base, where that machine has no branch of it); a pending task pinned to a place
-- where no worker runs any more is let go the same way.
UPDATE agent_tasks
SET status = 'pending', retry_count = 0, run_after = now(), assigned_worker_id = NULL,
    lease_expires_at = NULL, heartbeat_at = NULL, completed_at = NULL, duration_sec = NULL,
    workspace_at = CASE WHEN $2::boolean THEN NULL ELSE workspace_at END
WHERE task_id = $1 AND (status IN ('failed', 'dead', 'cancelled')
                        OR ($2::boolean AND status = 'pending'))
RETURNING task_id;

-- name: next_due
-- Seconds until the earliest pending task of these types ($1) and roles ($2 NULL: any)
-- is due (<= 0: one is due now, yet was not claimed: locked, or held by the governor);
-- NULL when none is pending. An idle pool sleeps that long, as no NOTIFY says when a
-- delayed task becomes due. A task pinned to another place ($3, 029) is not its own.
SELECT extract(epoch FROM min(run_after) - now())::float8 FROM agent_tasks
 WHERE status = 'pending' AND task_type = ANY($1::text[])
   AND ($2::text[] IS NULL OR assigned_role = ANY($2::text[]))
   AND (workspace_at IS NULL OR workspace_at = $3::text);

-- name: get
SELECT * FROM agent_tasks WHERE task_id = $1;

-- name: status_of
SELECT status FROM agent_tasks WHERE task_id = $1;

-- name: list
SELECT task_id, task_type, task_description, task_priority, status, assigned_role,
       assigned_worker_id, attempt, retry_count, max_retries, error, cost_usd, created_at,
       started_at, completed_at, duration_sec, payload ->> 'workflow' AS workflow, workspace_at
FROM agent_tasks
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR assigned_role = $2)
  -- $4: only the skipped (true), none of them (false), either (NULL); $5 the error's prefix
  AND ($4::boolean IS NULL OR starts_with(coalesce(error, ''), $5::text) = $4)
ORDER BY task_id DESC
LIMIT $3;

-- name: history
SELECT at, actor, action, details FROM agent_actions
WHERE subject_type = 'task' AND subject_id = $1::text
ORDER BY id;

-- name: counts
-- Tasks per outcome: a failure whose error starts with $1 (Claude was unavailable) is skipped.
SELECT CASE WHEN status = 'failed' AND starts_with(coalesce(error, ''), $1::text) THEN 'skipped'
            ELSE status END AS outcome,
       count(*) AS n
FROM agent_tasks GROUP BY 1;

-- name: spend
-- What the Claude runs of finished tasks cost, per role (NULL: tasks of no role).
SELECT assigned_role AS role, count(*) AS runs, coalesce(sum(cost_usd), 0)::float8 AS cost_usd
FROM agent_tasks WHERE cost_usd IS NOT NULL GROUP BY assigned_role ORDER BY assigned_role;

-- name: installed
-- Whether this namespace has a work queue at all (`echoctl worker` checks before serving).
SELECT to_regclass('agent_tasks') IS NOT NULL;

-- name: finished_by_minute
-- Tasks that ended in the last $1 minutes by the database's clock, per whole minute ago
-- (0: the minute now running) and outcome ($2: the skipped prefix, as `counts`).
SELECT floor(extract(epoch FROM now() - completed_at) / 60)::int AS ago,
       CASE WHEN status = 'failed' AND starts_with(coalesce(error, ''), $2::text) THEN 'skipped'
            ELSE status END AS outcome,
       count(*) AS n
FROM agent_tasks
WHERE completed_at IS NOT NULL AND completed_at > now() - make_interval(mins => $1::int)
GROUP BY 1, 2
ORDER BY 1, 2;
