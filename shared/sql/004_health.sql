-- 004: agent heartbeats. One row per role; an agent upserts it every beat.
-- `state` is what the agent says of itself (healthy, degraded, down on a clean stop);
-- readers derive `unresponsive` from a stale heartbeat.

CREATE TABLE agent_health (
    role           text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    state          text NOT NULL CHECK (state IN ('healthy', 'degraded', 'down')),
    reason         text,
    started_at     timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    details        jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE FUNCTION agent_health_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state OR NEW.pid IS DISTINCT FROM OLD.pid THEN
        INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
        VALUES (NEW.role, 'agent.' || NEW.state, 'agent', NEW.role,
                jsonb_build_object('pid', NEW.pid, 'host', NEW.host, 'reason', NEW.reason));
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER agent_health_audit AFTER INSERT OR UPDATE ON agent_health
    FOR EACH ROW EXECUTE FUNCTION agent_health_audit();
