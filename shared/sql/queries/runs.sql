-- Named queries of Claude runs (echo/work/runs/store.py): sessions, events, transcripts.
-- Every write by a worker is guarded as the queue guards results: the task is running
-- with this worker and attempt ($1 task, $2 worker, $3 attempt), else nothing lands and
-- the caller learns it lost the task.

-- name: record_session
INSERT INTO claude_sessions (task_id, attempt, worker_id, session_id, cwd, resumed_attempt)
SELECT t.task_id, t.attempt, t.assigned_worker_id, $4, $5, $6
FROM agent_tasks AS t
WHERE t.task_id = $1 AND t.assigned_worker_id = $2 AND t.attempt = $3 AND t.status = 'running'
ON CONFLICT (task_id, attempt) DO UPDATE
SET session_id = excluded.session_id, cwd = excluded.cwd,
    resumed_attempt = excluded.resumed_attempt
RETURNING task_id;

-- name: append_events
-- $4.. the events, in order, numbered from $4 (seq); at most one batch per call.
INSERT INTO claude_run_events (task_id, attempt, seq, kind, turn, cost_usd, summary)
SELECT t.task_id, t.attempt, $4 + e.ord - 1, e.kind, e.turn, e.cost, e.summary
FROM agent_tasks AS t,
     unnest($5::text[], $6::int[], $7::numeric[], $8::text[]) WITH ORDINALITY
         AS e(kind, turn, cost, summary, ord)
WHERE t.task_id = $1 AND t.assigned_worker_id = $2 AND t.attempt = $3 AND t.status = 'running'
ON CONFLICT DO NOTHING
RETURNING seq;

-- name: owned
SELECT 1 FROM agent_tasks
WHERE task_id = $1 AND assigned_worker_id = $2 AND attempt = $3 AND status = 'running';

-- name: append_transcript
INSERT INTO claude_transcripts (session_id, offset_bytes, task_id, attempt, project, chunk)
SELECT $4, $5, t.task_id, t.attempt, $6, $7
FROM agent_tasks AS t
WHERE t.task_id = $1 AND t.assigned_worker_id = $2 AND t.attempt = $3 AND t.status = 'running'
ON CONFLICT (session_id, offset_bytes) DO NOTHING
RETURNING offset_bytes;

-- name: previous_session
-- The latest session of an earlier attempt of this task, with how that attempt ended
-- (NULL: no ledger row, its worker died or lost the task mid-run).
SELECT s.attempt, s.session_id, s.cwd,
       (SELECT r.outcome FROM claude_runs AS r
        WHERE r.task_id = s.task_id AND r.attempt = s.attempt
        ORDER BY r.run_id DESC LIMIT 1) AS outcome
FROM claude_sessions AS s
WHERE s.task_id = $1 AND s.attempt < $2
ORDER BY s.attempt DESC
LIMIT 1;

-- name: transcript
SELECT offset_bytes, project, chunk FROM claude_transcripts
WHERE session_id = $1
ORDER BY offset_bytes;

-- name: transcript_end
SELECT coalesce(max(offset_bytes + octet_length(chunk)), 0) AS end_bytes
FROM claude_transcripts WHERE session_id = $1;

-- name: events
-- A task's run events after (attempt, seq), oldest first.
SELECT e.attempt, e.seq, e.at, e.kind, e.turn, e.cost_usd::float8 AS cost_usd, e.summary,
       s.session_id
FROM claude_run_events AS e
LEFT JOIN claude_sessions AS s ON s.task_id = e.task_id AND s.attempt = e.attempt
WHERE e.task_id = $1 AND (e.attempt, e.seq) > ($2, $3)
ORDER BY e.attempt, e.seq
LIMIT $4;

-- name: purge
-- Retention: events older than $1 seconds, and transcripts whose last range is.
WITH events AS (
    DELETE FROM claude_run_events WHERE at < now() - make_interval(secs => $1::float8)
    RETURNING 1
), transcripts AS (
    DELETE FROM claude_transcripts WHERE session_id IN (
        SELECT session_id FROM claude_transcripts GROUP BY session_id
        HAVING max(at) < now() - make_interval(secs => $1::float8))
    RETURNING 1
)
SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM transcripts) AS purged;

-- name: doing_now
-- What each running Claude task is doing: the latest event of its current attempt
-- (a tool result is shown as the call it answers).
SELECT DISTINCT ON (t.task_id) t.task_id, t.assigned_role AS role, e.attempt, e.kind,
       e.turn, e.cost_usd::float8 AS cost_usd, e.summary, e.at
FROM agent_tasks AS t
JOIN claude_run_events AS e ON e.task_id = t.task_id AND e.attempt = t.attempt
WHERE t.status = 'running' AND t.task_type = 'claude' AND e.kind <> 'tool_result'
ORDER BY t.task_id, e.seq DESC;
