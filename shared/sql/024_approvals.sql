-- 024: approvals (issue 23 item 3, issue 22 item 5): what waits for an operator's yes.
--
-- One row per request. `tool`: a Claude run called a tool its role's `[approval] tools`
-- gate; the PreToolUse hook recorded it (task, tool, input, the run's session and
-- tool_use id) and the run stopped there (`defer`). `merge`: the merge queue wants to
-- land a task's branch on a base that requires approval. `budget`: reserved for budget
-- raises a role asks for.
--
--   pending --approve--> approved --the hook lets the call run--> used
--           --deny-----> denied          (the reason goes back to the run)
--           --expires_at passed (the database's now())--> expired
--
-- A task whose run was deferred waits as `awaiting_approval` (no worker, no lease);
-- a decision puts it back to `pending`, and its next attempt resumes the session.
-- Every change of state writes its agent_actions row (actor: decided_by, else
-- `echo.actor`, else 'system'), by the trigger below.

CREATE TABLE approvals (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('tool', 'merge', 'budget')),
    role         text,
    task_id      bigint,
    tool_name    text,
    input        jsonb NOT NULL DEFAULT '{}'::jsonb,
    input_hash   text,                    -- md5 of the input's text: the fallback lookup key
    session_id   text,
    tool_use_id  text,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'used')),
    reason       text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    decided_at   timestamptz,
    decided_by   text,
    expires_at   timestamptz NOT NULL
);
-- One request per tool call of a task (the resumed run asks again with the same id).
CREATE UNIQUE INDEX approvals_tool_use_idx ON approvals (task_id, tool_use_id)
    WHERE tool_use_id IS NOT NULL;
CREATE INDEX approvals_task_idx ON approvals (task_id, id);
CREATE INDEX approvals_pending_idx ON approvals (expires_at) WHERE state = 'pending';
-- At most one live merge request per task.
CREATE UNIQUE INDEX approvals_merge_idx ON approvals (task_id)
    WHERE kind = 'merge' AND state IN ('pending', 'approved');

CREATE FUNCTION approvals_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.state IS NOT DISTINCT FROM OLD.state THEN
        RETURN NULL;
    END IF;
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    VALUES (coalesce(NEW.decided_by, nullif(current_setting('echo.actor', true), ''), 'system'),
            'approval.' || CASE WHEN TG_OP = 'INSERT' THEN 'requested' ELSE NEW.state END,
            'approval', NEW.id::text,
            jsonb_strip_nulls(jsonb_build_object(
                'kind', NEW.kind, 'role', NEW.role, 'task_id', NEW.task_id,
                'tool', NEW.tool_name, 'reason', NEW.reason,
                'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END)));
    RETURN NULL;
END $$;

CREATE TRIGGER approvals_audit AFTER INSERT OR UPDATE ON approvals
    FOR EACH ROW EXECUTE FUNCTION approvals_audit();

-- A task waits for a decision without a worker.
ALTER TABLE agent_tasks DROP CONSTRAINT agent_tasks_status_check;
ALTER TABLE agent_tasks ADD CONSTRAINT agent_tasks_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'dead',
                      'awaiting_approval'));

-- A run that stopped at a deferred tool call (the ledger's outcome).
ALTER TABLE claude_runs DROP CONSTRAINT claude_runs_outcome_check;
ALTER TABLE claude_runs ADD CONSTRAINT claude_runs_outcome_check
    CHECK (outcome IN ('ok', 'auth', 'credit', 'usage_limit', 'rate_limited', 'overloaded',
                       'api_error', 'max_budget', 'timeout', 'crash', 'hung', 'loop',
                       'deferred'));

-- Merging into this repository's base needs an operator's approval.
ALTER TABLE repositories ADD COLUMN require_approval boolean NOT NULL DEFAULT false;

-- A task awaiting approval is live: it keeps its dedupe key.
DROP INDEX agent_tasks_dedupe_idx;
CREATE UNIQUE INDEX agent_tasks_dedupe_idx ON agent_tasks (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('pending', 'running', 'awaiting_approval');
