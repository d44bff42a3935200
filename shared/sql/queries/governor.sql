-- Named queries of the governor (echo/work/governor). Each starts with `-- name: <name>`.
-- The claim's part lives in tasks.sql (complete_and_claim, fail); the tables and the
-- functions they share in 010_governor.sql.

-- name: set_actor
SELECT set_config('echo.actor', $1, true);

-- name: sync_config
-- Every process writes the breaker's threshold from its configuration at start.
INSERT INTO governor_config AS g (only_one, burst_usd, burst_minutes) VALUES (true, $1, $2)
ON CONFLICT (only_one) DO UPDATE SET burst_usd = excluded.burst_usd,
                                     burst_minutes = excluded.burst_minutes
WHERE (g.burst_usd, g.burst_minutes) IS DISTINCT FROM (excluded.burst_usd, excluded.burst_minutes);

-- name: sync_budgets
-- Defaults from config/*.toml and role.toml ($1 scopes, $2 keys, $3 amounts; NULL: no
-- budget). An operator's `echoctl budget set` wins over a file until changed again.
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[]) AS w(scope, key, daily_usd)
), dropped AS (
    DELETE FROM budgets AS b USING wanted AS w
    WHERE b.scope = w.scope AND b.key = w.key AND w.daily_usd IS NULL AND b.source = 'config'
)
INSERT INTO budgets AS b (scope, key, daily_usd, source)
SELECT scope, key, daily_usd, 'config' FROM wanted WHERE daily_usd IS NOT NULL
ORDER BY scope, key
ON CONFLICT (scope, key) DO UPDATE SET daily_usd = excluded.daily_usd, updated_at = now()
WHERE b.source = 'config' AND b.daily_usd <> excluded.daily_usd;

-- name: set_budget
INSERT INTO budgets AS b (scope, key, daily_usd, source) VALUES ($1, $2, $3, 'operator')
ON CONFLICT (scope, key) DO UPDATE
SET daily_usd = excluded.daily_usd, source = 'operator', updated_at = now();

-- name: workflow_exists
SELECT EXISTS (SELECT 1 FROM workflows WHERE id = $1);

-- name: budgets
-- Every budget with today's spend ($1 the day).
SELECT b.scope, b.key, b.daily_usd::float8 AS daily_usd, b.source, b.updated_at,
       coalesce(s.spent_usd, 0)::float8 AS spent_usd, coalesce(s.runs, 0) AS runs
FROM budgets AS b
LEFT JOIN claude_spend AS s ON s.day = $1 AND s.scope = b.scope AND s.key = b.key
ORDER BY b.scope, b.key;

-- name: pauses
SELECT account, until, reason, details, created_at FROM claude_pauses
WHERE until > coalesce($1::timestamptz, now())
ORDER BY account;

-- name: resume
-- Lift the breaker; it counts only what is spent from now on, so the spend that
-- tripped it cannot trip it again at the next run.
WITH lifted AS (
    DELETE FROM claude_pauses WHERE account = '*' RETURNING reason, details
), emptied AS (
    DELETE FROM claude_burst WHERE EXISTS (SELECT 1 FROM lifted)
)
SELECT reason, details FROM lifted;

-- name: record_runs
-- Ledger rows of runs made outside the queue (workflow questions), with the plan
-- windows they met.
WITH ledger AS (
    INSERT INTO claude_runs SELECT * FROM claude_runs_rows($1::jsonb, coalesce($2::timestamptz, now()), $3::text)
)
SELECT claude_pauses_record($1::jsonb);

-- name: today
SELECT governor_day(coalesce($1::timestamptz, now()), $2::text) AS day;

-- name: spend_by
-- Spend since day $1 (inclusive), grouped by $2: role, workflow, day or account.
SELECT CASE $2::text WHEN 'role' THEN coalesce(role, '')
                     WHEN 'workflow' THEN coalesce(workflow_id, '')
                     WHEN 'account' THEN account
                     ELSE day::text END AS key,
       sum(cost_usd)::float8 AS spent_usd, count(*) AS runs,
       count(*) FILTER (WHERE outcome <> 'ok') AS failed_runs,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       bool_or(estimated) AS estimated
FROM claude_runs
WHERE day >= $1::date
GROUP BY 1
ORDER BY 2 DESC, 1;

-- name: spend_today
-- Today's totals per scope and key ($1 the day).
SELECT scope, key, spent_usd::float8 AS spent_usd, runs FROM claude_spend WHERE day = $1;

-- name: waiting_tasks
-- Pending tasks of governed types, by role and workflow: what a budget or pause holds up.
SELECT coalesce(assigned_role, '') AS role, payload ->> 'workflow' AS workflow, count(*) AS n
FROM agent_tasks
WHERE status = 'pending' AND task_type = ANY($1::text[])
GROUP BY 1, 2;

-- name: runs_of_task
SELECT * FROM claude_runs WHERE task_id = $1 ORDER BY run_id;

-- name: clock
-- The governor's day and the hour of it now ($1: an injected clock, else the database's).
SELECT governor_day(coalesce($1::timestamptz, now()), $2::text) AS day,
       extract(hour FROM coalesce($1::timestamptz, now()) AT TIME ZONE $2::text)::int AS hour;

-- name: spend_by_hour
-- Day $1's ledger per role and hour of the day (in zone $2): what the spend chart adds up.
SELECT coalesce(role, '') AS role, extract(hour FROM at AT TIME ZONE $2::text)::int AS hour,
       sum(cost_usd)::float8 AS spent_usd, count(*) AS runs
FROM claude_runs
WHERE day = $1::date
GROUP BY 1, 2
ORDER BY 1, 2;
