-- 011: the failure model (issue 15). A workflow that Postgres refuses to move on (a
-- permanent error: bad data, a constraint, a missing object) is marked `error` with the
-- reason, so it leaves the open set and stops costing every agent a failed step per tick,
-- while the other workflows go on. `echoctl workflow show` shows the phase and the reason;
-- the audit trigger records it in the timeline (`workflow.error`).

ALTER TABLE workflows ADD COLUMN error text;

ALTER TABLE workflows DROP CONSTRAINT workflows_phase_check;
ALTER TABLE workflows ADD CONSTRAINT workflows_phase_check
    CHECK (phase IN ('selecting', 'discussing', 'voting', 'deciding', 'executing', 'done',
                     'error'));

DROP INDEX workflows_open_idx;
CREATE INDEX workflows_open_idx ON workflows (id) WHERE phase NOT IN ('done', 'error');

CREATE OR REPLACE FUNCTION workflows_audit() RETURNS trigger LANGUAGE plpgsql AS $$
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
                    'late', now() > OLD.phase_deadline, 'error', NEW.error)));
    END IF;
    RETURN NEW;
END $$;
