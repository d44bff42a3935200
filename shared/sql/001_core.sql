-- 001: the audit log every other table writes to.
-- Every state change and its agent_actions row are written in ONE transaction
-- (by a trigger where the table allows, so no code path can forget it).

CREATE TABLE agent_actions (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,           -- a role, a worker id (host:pid:slot) or 'system'
    action       text NOT NULL,           -- e.g. message.published, task.claimed, task.completed
    subject_type text NOT NULL,           -- message | task | decision | workflow | agent
    subject_id   text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX agent_actions_subject_idx ON agent_actions (subject_type, subject_id, id);
CREATE INDEX agent_actions_at_idx ON agent_actions (at);
