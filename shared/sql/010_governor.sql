-- 010: the spend and quota governor. Postgres is the one place every worker and agent,
-- on every machine, consults before a Claude run starts.
--
-- claude_runs    the ledger: one row per Claude run (task attempts and workflow
--                questions), written in the statement that stores the task's outcome
-- claude_spend   running totals per budget day and scope, kept by a trigger on the ledger
-- budgets        daily budgets of the organisation, a role or a workflow
-- claude_pauses  accounts that start no run until `until`: a plan window (usage limit),
--                or '*' for everything (the burn-rate breaker, until resumed)
-- governor_config the burn-rate breaker's threshold, written by every process at start
--
-- The claim statement (queries/tasks.sql) reads `claude_gate` once and passes what it
-- found to `agent_tasks_claimable`, so a budget or a pause holds across any number of
-- workers. The overshoot is bounded by the runs already in flight when the spend
-- crosses a budget: a worker's own finished runs are counted in the very statement
-- that claims its next task.

CREATE TABLE claude_runs (
    run_id        bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),  -- when the row was written
    day           date NOT NULL,                       -- budget day, organisation's zone
    kind          text NOT NULL CHECK (kind IN ('task', 'question')),
    task_id       bigint,
    attempt       integer,
    workflow_id   text,
    step          text,                                -- select, position, vote, decide
    role          text,
    account       text NOT NULL DEFAULT 'default',
    model         text,
    started_at    timestamptz,
    duration_ms   integer,
    cost_usd      numeric(12, 6) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    input_tokens  bigint,
    output_tokens bigint,
    turns         integer,
    outcome       text NOT NULL CHECK (outcome IN ('ok', 'auth', 'credit', 'usage_limit',
                                                   'rate_limited', 'overloaded', 'api_error',
                                                   'max_budget', 'timeout', 'crash')),
    session_id    text,
    estimated     boolean NOT NULL DEFAULT false       -- subscription: list-price estimate
);
CREATE INDEX claude_runs_at_idx ON claude_runs (at);
CREATE INDEX claude_runs_day_idx ON claude_runs (day);
CREATE INDEX claude_runs_task_idx ON claude_runs (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE claude_spend (
    day       date NOT NULL,
    scope     text NOT NULL CHECK (scope IN ('org', 'role', 'workflow', 'account')),
    key       text NOT NULL,                          -- '' for the organisation
    spent_usd numeric(14, 6) NOT NULL DEFAULT 0,
    runs      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (day, scope, key)
);

CREATE TABLE budgets (
    scope      text NOT NULL CHECK (scope IN ('org', 'role', 'workflow')),
    key        text NOT NULL,                         -- '' for the organisation
    daily_usd  numeric(12, 2) NOT NULL CHECK (daily_usd >= 0),
    source     text NOT NULL CHECK (source IN ('config', 'operator')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE TABLE claude_pauses (
    account    text PRIMARY KEY,                      -- '*': every account (the breaker)
    until      timestamptz NOT NULL,
    reason     text NOT NULL,                         -- "session limit", "burn-rate breaker"
    details    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE governor_config (
    only_one      boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    burst_usd     numeric(12, 2),                     -- NULL: no breaker
    burst_minutes double precision NOT NULL DEFAULT 10
);

-- What was spent in each minute, for the burn-rate breaker: its window is a sum of at
-- most burst_minutes rows, whatever the number of runs. `echoctl budget resume` empties
-- it, so the spend that tripped the breaker cannot trip it again at the next run.
CREATE TABLE claude_burst (
    minute    timestamptz PRIMARY KEY,
    spent_usd numeric(14, 6) NOT NULL DEFAULT 0
);

-- The spend within the breaker's window (whole minutes, the current one included).
CREATE FUNCTION claude_burst_spent(minutes double precision) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(spent_usd), 0) FROM claude_burst
    WHERE minute > now() - make_interval(secs => minutes * 60)
$$;

-- The budget day of `at` in zone `tz`.
CREATE FUNCTION governor_day(at timestamptz, tz text) RETURNS date
LANGUAGE sql STABLE AS $$ SELECT (at AT TIME ZONE tz)::date $$;

-- Ledger rows from the JSON array a worker sends with its results (see
-- echo/work/governor/ledger.py), dated in the organisation's zone. Column order is
-- the table's, so `INSERT INTO claude_runs SELECT * FROM claude_runs_rows(...)`.
CREATE FUNCTION claude_runs_rows(runs jsonb, at timestamptz, tz text)
RETURNS SETOF claude_runs
LANGUAGE sql VOLATILE AS $$
    SELECT nextval(pg_get_serial_sequence('claude_runs', 'run_id')), now(), governor_day(at, tz),
           r.kind, r.task_id, r.attempt, r.workflow_id, r.step, r.role,
           coalesce(r.account, 'default'), r.model, r.started_at, r.duration_ms,
           coalesce(r.cost_usd, 0), r.input_tokens, r.output_tokens, r.turns, r.outcome,
           r.session_id, coalesce(r.estimated, false)
    FROM jsonb_to_recordset(coalesce(runs, '[]'::jsonb)) AS r(
        kind text, task_id bigint, attempt integer, workflow_id text, step text, role text,
        account text, model text, started_at timestamptz, duration_ms integer,
        cost_usd numeric, input_tokens bigint, output_tokens bigint, turns integer,
        outcome text, session_id text, estimated boolean)
$$;

-- Plan windows met by these runs: the account pauses until the announced reset. A
-- later reset wins; the breaker's '*' row is never shortened.
CREATE FUNCTION claude_pauses_record(runs jsonb) RETURNS integer
LANGUAGE sql VOLATILE AS $$
    WITH met AS (
        SELECT coalesce(r.account, 'default') AS account, max(r.pause_until) AS until,
               max(r.pause_reason) AS reason
        FROM jsonb_to_recordset(coalesce(runs, '[]'::jsonb))
             AS r(account text, pause_until timestamptz, pause_reason text)
        WHERE r.pause_until IS NOT NULL
        GROUP BY 1
    ), saved AS (
        INSERT INTO claude_pauses AS p (account, until, reason)
        SELECT account, until, coalesce(reason, 'usage limit') FROM met ORDER BY account
        ON CONFLICT (account) DO UPDATE
        SET until = greatest(p.until, excluded.until), reason = excluded.reason,
            created_at = CASE WHEN p.until < now() THEN now() ELSE p.created_at END
        WHERE p.account <> '*'
        RETURNING 1
    )
    SELECT count(*)::integer FROM saved
$$;

-- What a claim needs to know, read once per claim: for each budget, what is left of it
-- today (`lefts`: {"org:": 1.5, "role:cto": -0.3, "workflow:wf-1": 2}, and "burst:" for
-- the breaker's window), counting the runs `fresh` that the same statement is writing;
-- and the accounts paused at `at`. Counting `fresh` is what makes a worker's own
-- finished run stop the claim made in the same statement.
-- A table function of one SELECT, so the planner inlines it into the claim statement
-- (planned once per prepared statement, not at every claim).
CREATE FUNCTION claude_gate(at timestamptz, tz text, fresh jsonb)
RETURNS TABLE (lefts jsonb, paused text[])
LANGUAGE sql STABLE AS $$
    WITH spent AS (
        SELECT x.scope, x.key, sum(x.usd) AS usd FROM (
            SELECT s.scope, s.key, s.spent_usd AS usd
            FROM claude_spend AS s WHERE s.day = (at AT TIME ZONE tz)::date AND s.scope <> 'account'
            UNION ALL
            SELECT v.scope, v.key, coalesce(r.cost_usd, 0)
            FROM jsonb_to_recordset(coalesce(fresh, '[]'::jsonb))
                 AS r(role text, workflow_id text, cost_usd numeric),
                 LATERAL (VALUES ('org', ''), ('role', r.role), ('workflow', r.workflow_id))
                 AS v(scope, key)
            WHERE v.key IS NOT NULL
        ) AS x GROUP BY x.scope, x.key
    )
    SELECT (SELECT coalesce(jsonb_object_agg(b.scope || ':' || b.key,
                                             b.daily_usd - coalesce(spent.usd, 0)), '{}'::jsonb)
            FROM budgets AS b LEFT JOIN spent USING (scope, key))
           || coalesce((SELECT jsonb_build_object('burst:', g.burst_usd
                            - (SELECT coalesce(sum(w.spent_usd), 0) FROM claude_burst AS w
                               WHERE w.minute > now() - make_interval(secs => g.burst_minutes * 60))
                            - (SELECT coalesce(sum(r.cost_usd), 0)
                               FROM jsonb_to_recordset(coalesce(fresh, '[]'::jsonb))
                                    AS r(cost_usd numeric)))
                        FROM governor_config AS g WHERE g.burst_usd IS NOT NULL), '{}'::jsonb),
           array(SELECT p.account FROM claude_pauses AS p WHERE p.until > at)
$$;

-- May a governed task (role, workflow, account) start, given the gate?
CREATE FUNCTION claude_may_start(lefts jsonb, paused text[], role text, workflow text,
                                 account text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT NOT ('*' = ANY(paused) OR account = ANY(paused))
       AND coalesce((lefts ->> 'burst:')::numeric >= 0, true)
       AND coalesce((lefts ->> 'org:')::numeric > 0, true)
       AND coalesce((lefts ->> ('role:' || role))::numeric > 0, true)
       AND coalesce((lefts ->> ('workflow:' || workflow))::numeric > 0, true)
$$;

-- What is left for one run: the smallest budget that applies (NULL: none applies).
CREATE FUNCTION claude_left(lefts jsonb, role text, workflow text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT least((lefts ->> 'org:')::numeric, (lefts ->> ('role:' || role))::numeric,
                 (lefts ->> ('workflow:' || workflow))::numeric)
$$;

-- The claim with the governor: 008's function, which it replaces, plus the gate
-- (the planner settings and the ordered, locking scan are 008's). Task types in
-- `governed` (claude) start only when `claude_may_start`; the others never wait.
-- A role's account is `role_accounts ->> role`, else the worker's `account`.
DROP FUNCTION agent_tasks_claimable(text[], text[], integer);

CREATE FUNCTION agent_tasks_claimable(types text[], roles text[], n integer,
                                      governed text[], lefts jsonb, paused text[],
                                      account text, role_accounts jsonb)
RETURNS SETOF bigint
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT task_id FROM agent_tasks
    WHERE status = 'pending' AND run_after <= now()
      AND task_type = ANY(types)
      AND (roles IS NULL OR assigned_role = ANY(roles))
      AND (task_type <> ALL(governed)
           OR claude_may_start(lefts, paused, assigned_role, payload ->> 'workflow',
                               coalesce(role_accounts ->> assigned_role, account)))
    ORDER BY task_priority DESC, task_id
    LIMIT n
    FOR UPDATE SKIP LOCKED
$$;

-- The spend totals, one upsert per (day, scope, key) per statement, in key order (two
-- writers never lock the same rows in opposite orders). Then the burn-rate breaker:
-- more than burst_usd written within burst_minutes trips it once: a '*' pause and,
-- in the same transaction, one broadcast to the CEO and the operator with the figures
-- and the top spenders.
CREATE FUNCTION claude_runs_account() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg governor_config;
    burst numeric;
    details jsonb;
BEGIN
    INSERT INTO claude_spend AS s (day, scope, key, spent_usd, runs)
    SELECT n.day, v.scope, v.key, sum(n.cost_usd), count(*)
    FROM new_rows AS n,
         LATERAL (VALUES ('org', ''), ('role', n.role), ('workflow', n.workflow_id),
                         ('account', n.account)) AS v(scope, key)
    WHERE v.key IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (day, scope, key) DO UPDATE
    SET spent_usd = s.spent_usd + excluded.spent_usd, runs = s.runs + excluded.runs;

    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE cost_usd > 0) THEN
        RETURN NULL;
    END IF;
    INSERT INTO claude_burst AS b (minute, spent_usd)
    SELECT date_trunc('minute', now()), sum(cost_usd) FROM new_rows
    ON CONFLICT (minute) DO UPDATE SET spent_usd = b.spent_usd + excluded.spent_usd;
    SELECT * INTO cfg FROM governor_config;
    IF cfg.burst_usd IS NULL OR EXISTS (SELECT 1 FROM claude_pauses WHERE account = '*') THEN
        RETURN NULL;
    END IF;
    burst := claude_burst_spent(cfg.burst_minutes);
    IF burst <= cfg.burst_usd THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_build_object(
        'spent_usd', burst, 'burst_usd', cfg.burst_usd, 'minutes', cfg.burst_minutes,
        'top', coalesce((SELECT jsonb_agg(t ORDER BY t.spent_usd DESC) FROM (
            SELECT coalesce(role, '(none)') AS role, sum(cost_usd) AS spent_usd, count(*) AS runs
            FROM claude_runs
            WHERE at > now() - make_interval(secs => cfg.burst_minutes * 60)
            GROUP BY 1 ORDER BY 2 DESC LIMIT 3) AS t), '[]'::jsonb))
    INTO details;
    INSERT INTO claude_pauses (account, until, reason, details)
    VALUES ('*', 'infinity', 'burn-rate breaker', details)
    ON CONFLICT (account) DO NOTHING;
    IF FOUND THEN
        INSERT INTO messages (uuid, channel, kind, from_role, to_role, subject, body)
        VALUES (gen_random_uuid(), 'messages:all', 'system', 'system', 'all',
                format('burn-rate breaker: all Claude work paused ($%s spent in %s min, limit $%s)',
                       round(burst, 2), cfg.burst_minutes, cfg.burst_usd),
                details || jsonb_build_object(
                    'alert', 'burn-rate breaker', 'to', jsonb_build_array('ceo', 'operator'),
                    'resume', 'echoctl budget resume'));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER claude_runs_account AFTER INSERT ON claude_runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION claude_runs_account();

-- Audit: every budget change and every pause, in the transaction that makes it.
CREATE FUNCTION governor_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    actor text := coalesce(nullif(current_setting('echo.actor', true), ''), 'system');
BEGIN
    IF TG_TABLE_NAME = 'budgets' THEN
        INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
        VALUES (actor, 'budget.' || lower(TG_OP), 'budget', NEW.scope || ':' || NEW.key,
                jsonb_build_object('daily_usd', NEW.daily_usd, 'source', NEW.source,
                                   'was', CASE WHEN TG_OP = 'UPDATE' THEN OLD.daily_usd END));
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
        VALUES (actor, CASE WHEN OLD.account = '*' THEN 'breaker.resumed' ELSE 'claude.resumed' END,
                'account', OLD.account, jsonb_build_object('reason', OLD.reason));
        RETURN NULL;
    END IF;
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    VALUES (actor, CASE WHEN NEW.account = '*' THEN 'breaker.tripped' ELSE 'claude.paused' END,
            'account', NEW.account,
            NEW.details || jsonb_build_object('until', NEW.until, 'reason', NEW.reason));
    RETURN NULL;
END $$;

CREATE TRIGGER budgets_audit AFTER INSERT OR UPDATE ON budgets
    FOR EACH ROW EXECUTE FUNCTION governor_audit();
CREATE TRIGGER claude_pauses_audit AFTER INSERT OR UPDATE OR DELETE ON claude_pauses
    FOR EACH ROW EXECUTE FUNCTION governor_audit();
