-- 009: role leases. A role is active on one agent process at a time: the holder of
-- its lease row. The namespace is this schema. Expiry is decided by the database's
-- clock (now()), never by a node's. Every takeover increments `epoch`.
--
-- Fencing: an agent process that acts as a role opens its connections with the
-- startup setting `echo.fence = 'role/epoch/holder'`. Every statement that writes a
-- table an agent writes as its role (inbox, cursors, messages, workflows, their
-- participants, decisions, tasks, health) first checks, under a share lock on the
-- lease row, that the row still has this epoch and this holder and has not expired.
-- A connection without the setting (the CLI, a standby's lease keeper) is not fenced.

CREATE TABLE role_leases (
    role        text PRIMARY KEY,
    holder      text,                 -- the agent process's id; NULL once released
    node        text NOT NULL,
    pid         integer NOT NULL,
    epoch       bigint NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    renewed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    wanted_by   text                  -- a preferred standby asking for the role back
);

-- One row per agent process, active or standing by: what `echoctl status` shows
-- for the whole organisation, whichever node it runs on.
CREATE TABLE role_agents (
    holder       text PRIMARY KEY,
    role         text NOT NULL,
    node         text NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    state        text NOT NULL CHECK (state IN ('standby', 'active', 'stopping')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX role_agents_role_idx ON role_agents (role);

-- One row per running `echoctl up`: a node name is used by one of them at a time.
CREATE TABLE echo_nodes (
    name         text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    state_dir    text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION role_lease_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fence text := current_setting('echo.fence', true);
BEGIN
    IF fence IS NULL OR fence = '' THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM role_leases
     WHERE role = split_part(fence, '/', 1)
       AND epoch = split_part(fence, '/', 2)::bigint
       AND holder = split_part(fence, '/', 3)
       AND expires_at > now()
       FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'EL001',
            MESSAGE = format('the lease of role %s at epoch %s is no longer held by this agent',
                             split_part(fence, '/', 1), split_part(fence, '/', 2)),
            HINT = 'the agent stops acting as the role and stands by';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER agent_inbox_fence BEFORE INSERT OR UPDATE OR DELETE ON agent_inbox
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER agent_cursors_fence BEFORE INSERT OR UPDATE OR DELETE ON agent_cursors
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER messages_fence BEFORE INSERT OR UPDATE OR DELETE ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER workflows_fence BEFORE INSERT OR UPDATE OR DELETE ON workflows
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER workflow_participants_fence BEFORE INSERT OR UPDATE OR DELETE ON workflow_participants
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER decisions_fence BEFORE INSERT OR UPDATE OR DELETE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER agent_tasks_fence BEFORE INSERT OR UPDATE OR DELETE ON agent_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
CREATE TRIGGER agent_health_fence BEFORE INSERT OR UPDATE OR DELETE ON agent_health
    FOR EACH STATEMENT EXECUTE FUNCTION role_lease_fence();
