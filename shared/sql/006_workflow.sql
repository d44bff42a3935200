-- 006: the collaborative workflow. Postgres holds the state machine; the bus carries
-- the messages (the start broadcast, positions, votes, the decision, task results).
--
-- Life of a workflow (one row in `workflows`):
--   selecting --> discussing (round 1..rounds) --> voting --> deciding --> executing --> done
-- Each agent writes only its own part (its participant row, its positions, its vote,
-- its task results); the CEO's agent moves `phase` forward when every expected part
-- is in or `phase_deadline` has passed. A transition is a guarded UPDATE (WHERE phase
-- and round are what the driver read), so it happens once whoever retries it.
-- Positions, votes and task results are bus messages on `workflow:<id>` with
-- thread_id = the workflow id; their uuids are derived from (workflow, role, step), so
-- posting twice after a crash inserts nothing.
-- Every change writes its agent_actions row in the same transaction, by the triggers
-- below; the actor is `echo.actor` (set_config(..., true)) when set.

CREATE SEQUENCE workflows_id_seq;

CREATE TABLE workflows (
    id              text PRIMARY KEY DEFAULT 'wf-' || nextval('workflows_id_seq'),
    subject         text NOT NULL CHECK (subject <> ''),
    body            text NOT NULL DEFAULT '',
    started_by      text NOT NULL,
    phase           text NOT NULL DEFAULT 'selecting'
                    CHECK (phase IN ('selecting', 'discussing', 'voting', 'deciding',
                                     'executing', 'done')),
    round           integer NOT NULL DEFAULT 0,
    roles           text[] NOT NULL,                -- who is asked to self-select
    rounds          integer NOT NULL DEFAULT 2 CHECK (rounds BETWEEN 1 AND 10),
    quorum          text NOT NULL DEFAULT 'majority' CHECK (quorum IN ('majority', 'unanimous')),
    decider_timeout double precision NOT NULL DEFAULT 30 CHECK (decider_timeout > 0),
    phase_timeout   double precision NOT NULL DEFAULT 120 CHECK (phase_timeout > 0),
    phase_deadline  timestamptz NOT NULL,
    consensus       text CHECK (consensus IN ('approved', 'rejected', 'escalated')),
    message_id      bigint,                          -- the start broadcast
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- Every agent polls the open workflows; finished ones leave this index.
CREATE INDEX workflows_open_idx ON workflows (id) WHERE phase <> 'done';

CREATE TABLE workflow_participants (
    workflow_id     text NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    role            text NOT NULL,
    participate     boolean NOT NULL,
    confidence      real NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    reason          text NOT NULL,
    decider         text NOT NULL CHECK (decider IN ('llm', 'keyword')),
    fallback_reason text,                            -- why the LLM decider was not used
    decided_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, role)
);

CREATE TABLE decisions (
    id              bigserial PRIMARY KEY,
    workflow_id     text NOT NULL UNIQUE REFERENCES workflows (id) ON DELETE CASCADE,
    decided_by      text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('approved', 'rejected')),
    consensus       text NOT NULL CHECK (consensus IN ('approved', 'rejected', 'escalated')),
    summary         text NOT NULL,
    tasks           jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [{role, description, task_id}]
    source          text NOT NULL CHECK (source IN ('llm', 'fallback')),
    fallback_reason text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION workflow_actor(fallback text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('echo.actor', true), ''), fallback, 'system')
$$;

CREATE FUNCTION workflows_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
        VALUES (workflow_actor(NEW.started_by), 'workflow.started', 'workflow', NEW.id,
                jsonb_build_object('subject', NEW.subject, 'roles', NEW.roles,
                                   'rounds', NEW.rounds, 'quorum', NEW.quorum));
    ELSIF NEW.phase IS DISTINCT FROM OLD.phase OR NEW.round IS DISTINCT FROM OLD.round THEN
        INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
        VALUES (workflow_actor(NULL), 'workflow.' || NEW.phase, 'workflow', NEW.id,
                jsonb_strip_nulls(jsonb_build_object(
                    'from', OLD.phase, 'round', NEW.round, 'consensus', NEW.consensus,
                    'late', now() > OLD.phase_deadline)));
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER workflows_audit AFTER INSERT OR UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION workflows_audit();

CREATE FUNCTION workflow_participants_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    VALUES (NEW.role, CASE WHEN NEW.participate THEN 'workflow.joined' ELSE 'workflow.declined' END,
            'workflow', NEW.workflow_id,
            jsonb_strip_nulls(jsonb_build_object(
                'decider', NEW.decider, 'confidence', NEW.confidence, 'reason', NEW.reason,
                'fallback_reason', NEW.fallback_reason)));
    RETURN NEW;
END $$;

CREATE TRIGGER workflow_participants_audit AFTER INSERT ON workflow_participants
    FOR EACH ROW EXECUTE FUNCTION workflow_participants_audit();

CREATE FUNCTION decisions_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    VALUES (NEW.decided_by, CASE WHEN TG_OP = 'INSERT' THEN 'decision.made' ELSE 'decision.tasks' END,
            'decision', NEW.id::text,
            jsonb_build_object('workflow', NEW.workflow_id, 'outcome', NEW.outcome,
                               'source', NEW.source, 'tasks', jsonb_array_length(NEW.tasks)));
    RETURN NEW;
END $$;

CREATE TRIGGER decisions_audit AFTER INSERT OR UPDATE ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_audit();
