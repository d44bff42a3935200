-- 030: the governor's gate costs nothing while there is nothing to govern (issue 20).
-- `claude_gate` (010) ran inside every claim of a pool that runs Claude tasks: today's
-- spend summed per scope, the burst window, the pauses. With no budget, no burst limit
-- and no pause in force, every run may start and none has a budget left to pass on, so
-- the gate now answers no row at all after three probes of small tables; the claim
-- statement (tasks.sql complete_and_claim) already reads no gate row as "nothing is
-- governed" (`gate.lefts IS NULL`: no task type is held, no `budget_left_usd`). The
-- decision is the same as before in every case; only its cost changes.

CREATE OR REPLACE FUNCTION claude_gate(at timestamptz, tz text, fresh jsonb)
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
    WHERE EXISTS (SELECT 1 FROM budgets)
       OR EXISTS (SELECT 1 FROM governor_config WHERE burst_usd IS NOT NULL)
       OR EXISTS (SELECT 1 FROM claude_pauses WHERE until > at)
$$;
