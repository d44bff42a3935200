-- 008: claims walk the claim index in order whatever the planner's statistics say.
--
-- Right after a burst of enqueues (before autovacuum has analysed agent_tasks), the
-- planner has no statistics for `status`, guesses that 0.5% of rows are pending, and
-- claims with a bitmap scan of EVERY pending row followed by a sort, to keep LIMIT of
-- them: each claim then costs O(backlog) (2.7 ms of a 5.8 ms claim of 200 with 14,000
-- pending), exactly when the backlog is large. Once analysed, it may instead update
-- the claimed rows through a hash join over a sequential scan of the whole table.
-- This function picks and locks the candidates with bitmap and sequential scans
-- disabled, which leaves the ordered scan of agent_tasks_claim_idx that stops after
-- `n` rows; the queries then update the rows through the primary key.
--
-- VOLATILE (it locks rows), so it runs with a snapshot of its own taken after that of
-- the calling statement: a row it locks that the caller's snapshot cannot see yet is
-- simply not updated, stays pending, and is unlocked at commit.

CREATE FUNCTION agent_tasks_claimable(types text[], roles text[], n integer)
RETURNS SETOF bigint
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
    SELECT task_id FROM agent_tasks
    WHERE status = 'pending' AND run_after <= now()
      AND task_type = ANY(types)
      AND (roles IS NULL OR assigned_role = ANY(roles))
    ORDER BY task_priority DESC, task_id
    LIMIT n
    FOR UPDATE SKIP LOCKED
$$;
