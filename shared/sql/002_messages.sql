-- 002: the durable message bus. Postgres is the record; Redis (or NOTIFY) only
-- announces rows that are already committed.
--
-- Ordering guarantee: message ids become visible in id order. A BEFORE INSERT
-- statement trigger takes a transaction-level advisory lock before any id is drawn
-- from the sequence, so two publishers cannot commit ids 11 and 10 out of order.
-- That is what lets a reader keep ONE number per role (agent_cursors) and read
-- `id > cursor` without ever skipping a row that committed late. The cost: keep
-- transactions that insert messages short (the lock is held until they end).

CREATE TABLE messages (
    id           bigserial PRIMARY KEY,
    uuid         uuid NOT NULL UNIQUE,          -- chosen by the sender: a retried insert is a no-op
    channel      text NOT NULL,                 -- messages:all, messages:<role>, decisions:<id>, ...
    kind         text NOT NULL,
    from_role    text NOT NULL,
    to_role      text NOT NULL,                 -- a role, or 'all'
    thread_id    text,
    subject      text NOT NULL CHECK (subject <> ''),
    body         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz                    -- NULL until Redis/NOTIFY announced it
);

-- The outbox relay's work list: tiny, because published rows leave it.
CREATE INDEX messages_unpublished_idx ON messages (id) WHERE published_at IS NULL;
-- `echoctl messages --role R` and per-role history.
CREATE INDEX messages_to_role_idx ON messages (to_role, id);
-- A discussion thread in order; most messages have no thread, so keep them out.
CREATE INDEX messages_thread_idx ON messages (thread_id, id) WHERE thread_id IS NOT NULL;

-- Catch-up cursor: the highest message id a role has handled. Only ever moves forward.
CREATE TABLE agent_cursors (
    role            text PRIMARY KEY,
    last_message_id bigint NOT NULL DEFAULT 0 CHECK (last_message_id >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION messages_serialise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One lock per namespace (schema), taken before the sequence is touched.
    PERFORM pg_advisory_xact_lock(hashtextextended(TG_TABLE_SCHEMA || '.messages', 0));
    RETURN NULL;
END $$;

CREATE TRIGGER messages_serialise BEFORE INSERT ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION messages_serialise();

-- The audit row of every message, in the inserting transaction. Statement level with a
-- transition table: a batch of 1,000 messages costs one INSERT ... SELECT, not 1,000.
CREATE FUNCTION messages_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_actions (actor, action, subject_type, subject_id, details)
    SELECT n.from_role, 'message.published', 'message', n.id::text,
           jsonb_build_object('uuid', n.uuid, 'channel', n.channel, 'kind', n.kind,
                              'to_role', n.to_role, 'thread_id', n.thread_id,
                              'subject', n.subject)
    FROM new_rows AS n
    ORDER BY n.id;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_audit AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION messages_audit();
