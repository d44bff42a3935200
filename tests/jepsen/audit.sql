-- The Jepsen run's own audit, added to the run's schema after the migrations (never
-- part of the product): every change of a role lease, and every statement written
-- under a lease fence, each stamped with the database's clock. The checker reads
-- both: who owned each role when, and whether a write came from a deposed owner.

CREATE TABLE jepsen_lease_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    role       text NOT NULL,
    holder     text,
    node       text,
    pid        integer,
    epoch      bigint,
    expires_at timestamptz
);

CREATE FUNCTION jepsen_lease_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jepsen_lease_log (role, holder, node, pid, epoch, expires_at)
    VALUES (NEW.role, NEW.holder, NEW.node, NEW.pid, NEW.epoch, NEW.expires_at);
    RETURN NULL;
END $$;

CREATE TRIGGER jepsen_lease_log AFTER INSERT OR UPDATE ON role_leases
    FOR EACH ROW EXECUTE FUNCTION jepsen_lease_log_row();

CREATE TABLE jepsen_writes (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT clock_timestamp(),  -- the statement's time
    txn_at timestamptz NOT NULL DEFAULT now(),              -- its transaction's start
    tbl    text NOT NULL,
    fence  text NOT NULL
);

CREATE FUNCTION jepsen_write_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fence text := current_setting('echo.fence', true);
BEGIN
    IF fence IS NOT NULL AND fence <> '' THEN
        INSERT INTO jepsen_writes (tbl, fence) VALUES (TG_TABLE_NAME, fence);
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agent_inbox', 'agent_cursors', 'messages', 'workflows',
                             'workflow_participants', 'decisions', 'agent_tasks', 'agent_health']
    LOOP
        EXECUTE format('CREATE TRIGGER jepsen_write AFTER INSERT OR UPDATE OR DELETE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION jepsen_write_statement()', t);
    END LOOP;
END $$;
