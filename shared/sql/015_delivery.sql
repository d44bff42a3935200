-- 015: delivery. An id for the organisation, so two organisations never share a Redis
-- channel; and which attempt handled each inbox row.
--
-- Redis pub/sub ignores the database number: every client of a server hears every
-- channel, whatever `/db` its URL names. Two organisations with the same namespace on
-- one Redis (two Postgres databases, or two hosts) used to publish on the same
-- `<namespace>:messages:all` and hear each other (issue 18, item 9). The wire name of
-- a channel now carries this id too (`echo.bus.channels.wire_channel`), drawn once per
-- namespace, here, from the server's strong random source, and read at start.

CREATE TABLE organisation (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    id       text NOT NULL CHECK (id ~ '^[0-9a-f]{16}$')
);
INSERT INTO organisation (id) VALUES (left(md5(gen_random_uuid()::text), 16));

-- Which attempt handled each inbox row (issue 19, fault 1). An agent handles a message
-- inside the transaction that inserts its row (echo/org/agent.py, Participant), and the
-- line it logs names the attempt too: an attempt killed before its commit leaves a line
-- but no row, so a reader of the logs counts only the line whose attempt the row names.
ALTER TABLE agent_inbox ADD COLUMN attempt text;
