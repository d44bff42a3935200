-- Claude runs that are watched (issue 21): what each run is doing, as it streams.
--
-- claude_sessions    one row per task attempt that reached the CLI's `init`: its session,
--                    the worker that ran it (the attempt is the task lease's epoch) and
--                    the attempt it resumed, if any
-- claude_run_events  the run's events (text, tool calls, tool results, turns, running
--                    cost), at most `claude_events_per_run` per attempt, kept for
--                    `claude_events_retention_days`
-- claude_runs        gains `resumed_attempt` (the ledger links the attempt a run
--                    continued) and the outcomes `hung` (the watchdog's idle timeout) and
--                    `loop` (the same tool call over and over)
--
-- Every row here is written by the worker that holds the attempt (queries/runs.sql
-- guards each INSERT with task, worker and attempt, as the queue guards its results).

CREATE TABLE claude_sessions (
    task_id         bigint NOT NULL,
    attempt         integer NOT NULL,
    worker_id       text NOT NULL,
    session_id      text NOT NULL,
    cwd             text,
    resumed_attempt integer,
    started_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, attempt)
);
CREATE INDEX claude_sessions_session_idx ON claude_sessions (session_id);

CREATE TABLE claude_run_events (
    task_id  bigint NOT NULL,
    attempt  integer NOT NULL,
    seq      integer NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    kind     text NOT NULL CHECK (kind IN ('init', 'text', 'tool_use', 'tool_result',
                                           'result', 'watchdog', 'resume')),
    turn     integer,
    cost_usd numeric(12, 6),
    summary  text NOT NULL,
    PRIMARY KEY (task_id, attempt, seq)
);
CREATE INDEX claude_run_events_at_idx ON claude_run_events (at);

ALTER TABLE claude_runs ADD COLUMN resumed_attempt integer;
ALTER TABLE claude_runs DROP CONSTRAINT claude_runs_outcome_check;
ALTER TABLE claude_runs ADD CONSTRAINT claude_runs_outcome_check
    CHECK (outcome IN ('ok', 'auth', 'credit', 'usage_limit', 'rate_limited', 'overloaded',
                       'api_error', 'max_budget', 'timeout', 'crash', 'hung', 'loop'));

-- The ledger's JSON rows, now with `resumed_attempt` (the row type gained a column).
CREATE OR REPLACE FUNCTION claude_runs_rows(runs jsonb, at timestamptz, tz text)
RETURNS SETOF claude_runs
LANGUAGE sql VOLATILE AS $$
    SELECT nextval(pg_get_serial_sequence('claude_runs', 'run_id')), now(), governor_day(at, tz),
           r.kind, r.task_id, r.attempt, r.workflow_id, r.step, r.role,
           coalesce(r.account, 'default'), r.model, r.started_at, r.duration_ms,
           coalesce(r.cost_usd, 0), r.input_tokens, r.output_tokens, r.turns, r.outcome,
           r.session_id, coalesce(r.estimated, false), r.resumed_attempt
    FROM jsonb_to_recordset(coalesce(runs, '[]'::jsonb)) AS r(
        kind text, task_id bigint, attempt integer, workflow_id text, step text, role text,
        account text, model text, started_at timestamptz, duration_ms integer,
        cost_usd numeric, input_tokens bigint, output_tokens bigint, turns integer,
        outcome text, session_id text, estimated boolean, resumed_attempt integer)
$$;
