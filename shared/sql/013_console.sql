-- 013: live events for the console. Every state change already writes its
-- agent_actions row in the same transaction (messages, tasks, workflows, decisions,
-- agent health), so the audit log IS the event feed. One NOTIFY `<schema>:events`
-- per inserting statement wakes the console's single LISTEN connection, which then
-- reads the rows after its cursor. The payload is constant so that a transaction
-- writing many audited statements sends one notification (Postgres folds identical
-- payloads of one transaction), and NOTIFY only goes out when the rows commit.
CREATE FUNCTION agent_actions_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(current_schema() || ':events', 'new');
    RETURN NULL;
END $$;

CREATE TRIGGER agent_actions_announce AFTER INSERT ON agent_actions
    FOR EACH STATEMENT EXECUTE FUNCTION agent_actions_announce();
