-- 023: the claim statement's triggers do nothing when they have nothing to do.
-- Statement-level triggers fire even for a statement that touches no row, and the
-- pool's one statement (queries/tasks.sql complete_and_claim) has four parts that
-- usually do: the ledger INSERT (no Claude run finished), the `done` UPDATE (no result
-- to store) and, on an idle poll, the `claimed` UPDATE (nothing pending). Each empty
-- part still ran its audit trigger, whose empty INSERT into agent_actions sent the
-- console a NOTIFY `<schema>:events` (013) that woke it to read nothing, and the
-- ledger's accounting trigger planned an upsert of no rows.
-- Now: the console's NOTIFY goes out once per statement that inserted audit rows
-- (still constant-payload, folded per transaction, sent at commit), and the
-- accounting starts only when runs were written. What is written is unchanged.

CREATE OR REPLACE FUNCTION agent_actions_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows) THEN
        PERFORM pg_notify(current_schema() || ':events', 'new');
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER agent_actions_announce ON agent_actions;
CREATE TRIGGER agent_actions_announce AFTER INSERT ON agent_actions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_actions_announce();

CREATE OR REPLACE FUNCTION claude_runs_account() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cfg governor_config;
    burst numeric;
    details jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;  -- a claim or a result without a Claude run: nothing to account
    END IF;
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
